"""Run the comparison's jobs (one optimizer on one dataset each) on several processes.

Every run seeds its own generators, so the results do not depend on how many processes
share the work or in which order the jobs finish. Each worker process runs torch and numba
on one thread (the models are small: one process per core is faster than threads).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

from adagrad.experiments.data import TabularData, TextData
from adagrad.experiments.experiment import (
    GridPoint,
    OptimizerResult,
    metric_for,
    settings_for,
    trivial_predictor,
    tune_and_repeat,
)
from adagrad.experiments.optimizers import BY_KEY
from adagrad.experiments.training import RunOutcome, train

Data = TextData | TabularData
#: ``on_progress(epochs_done, epochs_added, description)``.
ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Job:
    """One optimizer (``spec_key``) on one dataset (``dataset``: a data name, variants included)."""

    dataset: str
    kind: str
    spec_key: str
    seeds: int
    quick: bool
    full: bool = False

    @property
    def planned_runs(self) -> int:
        """Runs before any grid extension: the starting grid and the other seeds."""
        spec = BY_KEY[self.spec_key]
        if not spec.tuned:
            return self.seeds
        return len(spec.start_grid(self.kind, self.quick)) + self.seeds - (1 if self.quick else 0)

    @property
    def epochs(self) -> int:
        """Epochs of one run."""
        return settings_for(self.dataset, self.quick, self.full).epochs


@dataclass
class JobResult:
    """What a job sends back (picklable: the spec and metric are looked up again)."""

    lr: float | None
    grid: list[GridPoint]
    runs: list[RunOutcome]
    grid_limited: bool
    winner: RunOutcome | None = None

    def attach(self, job: Job, data: Data) -> OptimizerResult:
        """The `OptimizerResult` this stands for (failed seeds scored against ``data``'s
        trivial predictor)."""
        return OptimizerResult(BY_KEY[job.spec_key], self.lr, self.grid, self.runs,
                               metric_for(data), self.grid_limited, trivial_predictor(data),
                               self.winner)


def run_job(job: Job, data: Data, on_progress: ProgressFn | None = None) -> JobResult:
    """Tune and repeat one optimizer on one dataset (see `experiment.tune_and_repeat`)."""
    spec = BY_KEY[job.spec_key]
    settings = settings_for(job.dataset, job.quick, job.full)
    started = 0

    def train_at(lr: float | None, seed: int, keep_rates: bool) -> RunOutcome:
        nonlocal started
        started += 1
        what = f"{job.dataset}/{spec.key} " + (f"lr={lr:g} " if lr is not None else "") + f"seed={seed}"
        if on_progress is not None and started > job.planned_runs:
            on_progress(0, settings.epochs, what)
        tick = (lambda: on_progress(1, 0, what)) if on_progress is not None else None
        return train(data, spec, lr, seed, settings, tick, keep_rates)

    result = tune_and_repeat(spec, job.kind, train_at, metric_for(data), job.seeds, job.quick)
    return JobResult(result.lr, result.grid, result.runs, result.grid_limited, result.winner)


# --- worker processes ------------------------------------------------------------------------

_WORKER_DATA: dict[str, Data] = {}
_WORKER_QUEUE = None


def _init_worker(datasets: dict[str, Data], progress_queue) -> None:
    global _WORKER_QUEUE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    one_thread()
    _WORKER_DATA.update(datasets)
    _WORKER_QUEUE = progress_queue


def _run_in_worker(job: Job) -> JobResult:
    def report(done: int, added: int, what: str) -> None:
        _WORKER_QUEUE.put((done, added, what))
    return run_job(job, _WORKER_DATA[job.dataset], report)


def one_thread() -> None:
    """Run torch and numba on one thread in this process.

    numba is set first: launching its OpenMP pool calls ``omp_set_num_threads``, which resets
    torch's thread count (they share libgomp), so torch's setting must come after it.
    """
    import torch

    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, RuntimeError, ValueError):  # pragma: no cover - numba is optional here
        pass
    torch.set_num_threads(1)


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _cost(job: Job, datasets: dict[str, Data]) -> float:
    """A rough cost for ordering: examples × epochs × runs, dense text gradients ×3."""
    data = datasets[job.dataset]
    n = len(data.train) if isinstance(data, TextData) else len(data.y_train)
    dense_text = isinstance(data, TextData) and not BY_KEY[job.spec_key].sparse
    return n * job.epochs * job.planned_runs * (3.0 if dense_text else 1.0)


def run_jobs(jobs: list[Job], datasets: dict[str, Data], processes: int,
             on_progress: ProgressFn | None = None) -> dict[Job, JobResult]:
    """Run every job, on ``processes`` worker processes (1: in this process)."""
    if processes <= 1 or len(jobs) <= 1:
        return {job: run_job(job, datasets[job.dataset], on_progress) for job in jobs}
    context = multiprocessing.get_context("spawn")
    progress_queue = context.Queue()
    ordered = sorted(jobs, key=lambda j: _cost(j, datasets), reverse=True)
    pool = ProcessPoolExecutor(max_workers=min(processes, len(jobs)), mp_context=context,
                               initializer=_init_worker, initargs=(datasets, progress_queue))
    try:
        futures: dict[Future, Job] = {pool.submit(_run_in_worker, job): job for job in ordered}
        results = _collect(futures, progress_queue, on_progress)
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()
    return results


def _collect(futures: dict[Future, Job], progress_queue,
             on_progress: ProgressFn | None) -> dict[Job, JobResult]:
    results: dict[Job, JobResult] = {}
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        _drain(progress_queue, on_progress)
        for future in done:
            results[futures[future]] = future.result()
    _drain(progress_queue, on_progress)
    return results


def _drain(progress_queue, on_progress: ProgressFn | None) -> None:
    while True:
        try:
            message = progress_queue.get_nowait()
        except queue.Empty:
            return
        if on_progress is not None:
            on_progress(*message)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)
