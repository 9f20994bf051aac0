"""docs/results/compare.md is generated from the committed docs/results/metrics.json of the
default run, and the two agree."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from adagrad.experiments import results_page

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads((RESULTS / "metrics.json").read_text(encoding="utf-8"))


def test_page_is_generated_from_the_committed_metrics(metrics):
    page = (RESULTS / "compare.md").read_text(encoding="utf-8")
    assert page == results_page.render(metrics), (
        "docs/results/compare.md disagrees with metrics.json: regenerate it with "
        "python -m adagrad.experiments.results_page docs/results/metrics.json > docs/results/compare.md")


def test_committed_metrics_are_the_default_run(metrics):
    settings = metrics["settings"]
    assert not settings["quick"] and not settings["full"] and settings["seeds"] == 5
    assert "--dataset" not in settings["command"] and "--task" not in settings["command"]
    assert {d["name"] for d in metrics["datasets"] if d["held_out"]} == {
        "election-tweets", "friends", "breast-cancer", "digits", "diabetes"}
    assert settings["machine"] and settings["cpu_seconds"] > 0


def test_verdict_table_is_one_line_per_claim_with_test_multiplicity_and_failed_seeds(metrics):
    page = results_page.render(metrics)
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [c["id"] for c in metrics["claims"]]
    for row, c in zip(rows, metrics["claims"]):
        cells = row.split(" | ")
        assert c["verdict"] in cells[1] and cells[-1].rstrip(" |") == str(c["failed_seeds"])
        assert c["multiplicity"] in row and c["test"] in row


def test_page_follows_the_metrics(metrics):
    changed = copy.deepcopy(metrics)
    changed["claims"][0]["verdict"] = "not supported"
    held = next(r for r in changed["runs"] if r["optimizer"] == "adagrad-lr-free"
                and any(d["name"] == r["dataset"] and d["held_out"] for d in changed["datasets"]))
    held["test_metric"]["mean"] = 0.123456
    page = results_page.render(changed)
    assert page != results_page.render(metrics)
    assert "12.3 ±" in page
