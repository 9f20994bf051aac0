"""The work of `adagrad fit` / `adagrad predict` (`adagrad.fit_cli` parses and reports).

Training reads the file once to learn its labels and document frequencies, keeping the
hashed rows in memory while they fit in ``--cache-mb`` (past that, every pass reads the
file again, chunk by chunk), then runs ``--epochs`` passes of `AdagradClassifier` /
`AdagradRegressor` (as `linear_models.FileClassifier` / `FileRegressor`, which need neither
torch nor scikit-learn on the one-example path; `partial_fit`: over all the cached rows in a fresh order each pass, or
chunk by chunk). Nothing is written before the model is complete.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from adagrad.linear.losses import REGRESSION_LOSSES
from adagrad.textfiles.features import Featurizer, idf_weights, numeric_labels
from adagrad.textfiles.linear_models import FileClassifier, FileRegressor
from adagrad.textfiles.metrics import metrics_of
from adagrad.textfiles.model_file import atomic_file, load_model, save_model
from adagrad.textfiles.readers import InputError, detect_format, read_chunks

REGRESSION_MIN_DISTINCT = 20  # auto: numeric labels with more distinct values are a regression


@dataclass
class _Scan:
    """What the first reading of the training file learnt."""

    labels: set = field(default_factory=set)
    examples: int = 0
    document_frequency: np.ndarray | None = None
    cached: list | None = field(default_factory=list)  # (raw X, chunk) while in the budget
    text: bool = False


def _check_arguments(args) -> None:
    for name, low, high in (("epochs", 1, None), ("bits", 1, 31), ("ngrams", 1, 8)):
        value = getattr(args, name)
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high else f"at least {low}"
            raise InputError(f"--{name} must be {span}, got {value}")
    for name in ("lr", "l1", "l2", "cache_mb"):
        value = getattr(args, name)
        if not np.isfinite(value) or value < 0 or (name == "lr" and value == 0):
            raise InputError(f"--{name.replace('_', '-')} must be a finite number "
                             f"{'> 0' if name == 'lr' else '≥ 0'}, got {value}")


def _settings(args, path: str) -> dict:
    fmt = detect_format(path) if args.format == "auto" else args.format
    return {"format": fmt, "label_column": args.label_column, "text_column": args.text_column,
            "bits": args.bits, "ngrams": args.ngrams}


def _chunks(path: str, settings: dict, labelled: bool = True):
    chunks = read_chunks(path, settings["format"], bits=settings["bits"],
                         label_column=settings["label_column"],
                         text_column=settings["text_column"], labelled=labelled)
    return _progress(chunks, path)


def _progress(chunks, path: str):
    """``chunks`` with a progress bar in bytes on a terminal (stderr), none otherwise."""
    if not sys.stderr.isatty():
        yield from chunks
        return
    from tqdm import tqdm

    with tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, desc=path,
              leave=False) as bar:
        for chunk in chunks:
            bar.update(chunk.end_offset - bar.n)
            yield chunk


def _scan(path: str, settings: dict, featurizer: Featurizer, cache_mb: float) -> _Scan:
    """Read the training file once: labels, document frequencies, rows while they fit."""
    scan = _Scan(document_frequency=np.zeros(featurizer.n_features, np.int64))
    budget = cache_mb * 2**20
    for chunk in _chunks(path, settings):
        X = featurizer.rows(chunk)
        scan.text = chunk.texts is not None
        scan.labels.update(chunk.labels)
        scan.examples += X.shape[0]
        scan.document_frequency += np.bincount(X.indices, minlength=featurizer.n_features)
        if scan.cached is not None:
            scan.cached.append((X, chunk))
            budget -= X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
            if budget < 0:
                scan.cached = None
    return scan


def _choose_loss(loss: str, labels: set) -> str:
    if loss != "auto":
        return loss
    try:
        values = {float(label) for label in labels}
    except ValueError:
        return "log_loss"
    return "squared_error" if len(values) > REGRESSION_MIN_DISTINCT else "log_loss"


def _model(loss: str, args):
    penalty = "l2" if args.l1 == 0 else ("l1" if args.l2 == 0 else "elasticnet")
    alpha = args.l1 + args.l2
    common = dict(loss=loss, penalty=penalty, alpha=alpha, l1_ratio=args.l1 / alpha if alpha else 0,
                  optimizer=args.optimizer, lr=args.lr, epochs=args.epochs,
                  random_state=args.seed)
    return FileRegressor(**common) if loss in REGRESSION_LOSSES else FileClassifier(**common)


def _targets(chunk, path: str, regression: bool):
    return numeric_labels(chunk, path) if regression else np.asarray(chunk.labels)


def _joined(scan: _Scan, featurizer: Featurizer, path: str, regression: bool):
    """The cached training rows as one (X, y), or None where they were not kept."""
    if scan.cached is None:
        return None
    X = sp.vstack([featurizer.weighted(X) for X, _ in scan.cached], format="csr")
    y = np.concatenate([_targets(chunk, path, regression) for _, chunk in scan.cached])
    scan.cached = None
    return X, y


def _batches(path: str, settings: dict, featurizer: Featurizer, joined, regression: bool):
    """(X, y) of a file: ``joined`` where the rows are in memory, else chunk by chunk."""
    if joined is not None:
        yield joined
        return
    for chunk in _chunks(path, settings):
        yield featurizer.rows(chunk), _targets(chunk, path, regression)


def fit(args) -> int:
    """`adagrad fit` (`adagrad.fit_cli`)."""
    _check_arguments(args)
    settings = _settings(args, args.train)
    featurizer = Featurizer(args.bits, args.ngrams)
    scan = _scan(args.train, settings, featurizer, args.cache_mb)
    if scan.examples == 0:
        raise InputError(f"{args.train}: no examples (an empty training file)")
    loss = _choose_loss(args.loss, scan.labels)
    regression = loss in REGRESSION_LOSSES
    if scan.text and args.idf:
        featurizer.idf = idf_weights(scan.document_frequency, scan.examples)
    joined = _joined(scan, featurizer, args.train, regression)
    model = _model(loss, args)
    classes = None if regression else np.unique(np.asarray(sorted(scan.labels)))
    if classes is not None and classes.size < 2:
        raise InputError(f"{args.train}: every example has the label {str(classes[0])!r}: a "
                         "classifier needs two classes or more")
    for _ in range(args.epochs):
        for X, y in _batches(args.train, settings, featurizer, joined, regression):
            model.partial_fit(X, y, **({} if regression else {"classes": classes}))
    report = {"train": metrics_of(model, _batches(args.train, settings, featurizer, joined,
                                                  regression))}
    if args.test:
        test_settings = {**settings, "format": _settings(args, args.test)["format"]}
        report["test"] = metrics_of(model, _batches(args.test, test_settings, featurizer, None,
                                                    regression))
    save_model(args.output, model, settings, featurizer.idf)
    _print_report(report, args, loss, scan.examples)
    return 0


def _print_report(report: dict, args, loss: str, examples: int) -> None:
    print(f"adagrad fit: {examples} examples, loss {loss}, {args.epochs} epochs; "
          f"model written to {args.output}")
    for split, metrics in report.items():
        print(f"{split}: " + "  ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    if args.json:
        last = report.get("test", report["train"])
        print(json.dumps({**last, **report, "loss": loss, "examples": examples,
                          "model": args.output}))


def predict(args) -> int:
    """`adagrad predict` (`adagrad.fit_cli`)."""
    model, settings, idf = load_model(args.model)
    featurizer = Featurizer(settings["bits"], settings["ngrams"], idf)
    settings = {**settings, "format": (detect_format(args.file) if settings["format"] != "csv"
                                       else "csv")}
    lines = []
    for chunk in _chunks(args.file, settings, labelled=False):
        lines.extend(str(value) for value in model.predict(featurizer.rows(chunk)))
    text = "".join(f"{line}\n" for line in lines)
    if args.output is None:
        sys.stdout.write(text)
    else:
        with atomic_file(args.output, "w") as out:
            out.write(text)
    return 0
