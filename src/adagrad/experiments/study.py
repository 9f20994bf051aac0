"""The whole study: the datasets (and their rare-word variants), one job per optimizer and
dataset, run on worker processes, gathered into one `DatasetResult` per dataset."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from adagrad.experiments.data import (
    TEXT_KIND,
    DatasetInfo,
    TabularData,
    TextData,
    rare_words_only,
    sample_documents,
)
from adagrad.experiments.experiment import DatasetResult, settings_for
from adagrad.experiments.optimizers import optimizers_for
from adagrad.experiments.runner import Job, JobResult, run_jobs

#: The optimizers trained on the rare-word variant of each text dataset (claim
#: ``learns-from-rare-words``).
RARE_WORD_OPTIMIZERS = ("adagrad-founding", "sgd")
#: The optimizers trained on a held-out dataset (claim ``lr-free-matches-tuned``, judged there
#: only): tuned Adagrad, the learning-rate-free member and the anchors with their variants.
HELD_OUT_OPTIMIZERS = ("adagrad-founding", "adagrad-lr-free", "dadapt-adagrad", "dog", "dog-avg",
                       "ldog", "ldog-avg")
#: Run on the held-out datasets only (the claim they serve is judged there).
HELD_OUT_ONLY = ("dog-avg", "ldog-avg")
#: ``--quick`` trains on at most this many documents of each text dataset.
QUICK_DOCUMENTS = 1500


@dataclass
class StudyData:
    """A dataset to train on: its info, its data and, for a variant, what it derives from."""

    info: DatasetInfo
    data: TextData | TabularData
    variant_of: str | None = None

    @property
    def name(self) -> str:
        """The data's name (``<dataset>-rare`` for a variant)."""
        return self.data.name


def load_all(infos: list[DatasetInfo], say: Callable[[str], None],
             quick: bool = False) -> list[StudyData]:
    """Load every dataset and derive the rare-word variant of each development text dataset (``quick``:
    from a sample of `QUICK_DOCUMENTS` training documents)."""
    loaded: list[StudyData] = []
    for info in infos:
        start = time.perf_counter()
        data = info.loader()
        if quick and isinstance(data, TextData):
            data = sample_documents(data, QUICK_DOCUMENTS)
        say(f"{info.name}: {data.describe()} (loaded in {time.perf_counter() - start:.1f} s)")
        loaded.append(StudyData(info, data))
        if info.kind == TEXT_KIND and not info.heldout:
            loaded.append(StudyData(info, rare_words_only(data), variant_of=info.name))
    return loaded


def _specs(item: StudyData) -> list:
    specs = optimizers_for(item.info.kind, item.info.task)
    if item.variant_of is not None:
        return [s for s in specs if s.key in RARE_WORD_OPTIMIZERS]
    if item.info.heldout:
        return [s for s in specs if s.key in HELD_OUT_OPTIMIZERS]
    return [s for s in specs if s.key not in HELD_OUT_ONLY]


def plan(datasets: list[StudyData], seeds: int, quick: bool, full: bool) -> list[Job]:
    """One job per optimizer and dataset."""
    return [Job(item.name, item.info.kind, spec.key, seeds, quick, full)
            for item in datasets for spec in _specs(item)]


def run_study(datasets: list[StudyData], seeds: int, quick: bool, full: bool, processes: int,
              progress_bar: Callable[[int], object]) -> list[DatasetResult]:
    """Run every job and gather the results per dataset (registry order within each).

    Args:
      progress_bar: ``total_epochs -> bar`` with tqdm's ``update``, ``total``,
        ``set_postfix_str``, ``refresh`` and context-manager protocol.
    """
    jobs = plan(datasets, seeds, quick, full)
    total = sum(job.planned_runs * job.epochs for job in jobs)
    with progress_bar(total) as bar:
        def on_progress(done: int, added: int, what: str) -> None:
            if added:
                bar.total += added
                bar.refresh()
            if done:
                bar.set_postfix_str(what, refresh=False)
                bar.update(done)
        results = run_jobs(jobs, {item.name: item.data for item in datasets}, processes,
                           on_progress)
    return [_gather(item, jobs, results, seeds, quick, full) for item in datasets]


def _gather(item: StudyData, jobs: list[Job], results: dict[Job, JobResult], seeds: int,
            quick: bool, full: bool) -> DatasetResult:
    mine = [job for job in jobs if job.dataset == item.name]
    outcomes = [results[job].attach(job, item.data) for job in mine]
    seconds = sum(run.seconds for result in outcomes for run in result.runs)
    return DatasetResult(item.info, item.data, settings_for(item.name, quick, full), outcomes,
                         seconds, variant_of=item.variant_of)
