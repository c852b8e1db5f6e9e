"""Engines: where submissions are measured (run and evaluated) in a batch.

The slow half of grading -- running notebooks in the sandbox and evaluating
models in the Keras worker -- is a pure function of a submission:
``measure_job(job) -> Measurements``.  An engine decides where it runs:

* ``InlineEngine``: in this process, one student after another (``--workers 1``);
* ``PoolEngine``: a pool of local worker processes (``--workers N``), each
  keeping its own Keras evaluation worker for every student it measures;
* ``DaskEngine``: the workers of a Dask distributed cluster (``--scheduler``).

Every engine yields ``(submission, (Measurements, memory_capped, plots) |
Exception)`` as results arrive; the caller scores, stores and reports them in
its own process, so the gradebook has exactly one writer.  ``plots`` are the
PNGs the student's page will show, drawn by the worker while the caller
writes (``report.cache.draw_plots``; the caller draws any that are missing).
An engine never lets one student end the batch: a worker that dies has its
students retried once in a fresh worker, then reported as errors.
``make_engine`` picks one from the command line.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from .errors import ClusterError, FatalError, WorkerCrashed
from .logs import worker_output_to_log

#: a worker that dies this many times while holding a student gives that student an error
MAX_ATTEMPTS = 2


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Job:
    """One student to measure: everything a worker needs, nothing it must not see (no secret: only
    the seeds derived from it, which the evaluation worker needs to draw the held-out data)."""

    spec: object  # spec.FrozenSpec: the assignment's files and parsed spec, as the batch read them
    seeds: tuple  # ((dataset, seed), ...)
    submission: object  # intake.Submission
    limits: object = None  # the batch's notebook time limits (execute.limits.BatchLimits), probed once at its start
    unsandboxed: bool = False  # the TA allowed notebooks to run where they cannot be isolated (--allow-unsandboxed)


# -- worker side -------------------------------------------------------------------

_state = threading.local()  # per thread: a Dask worker may run tasks in several threads


def _worker_evaluator(spec, seeds: tuple):
    """The (assignment, Evaluator) of this worker thread, made once per spec and seeds and reused for every
    job."""
    from .evaluate import Evaluator

    key = (spec.digest, seeds)
    cached = getattr(_state, "entry", None)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    if cached is not None:
        cached[2].close()
    if mp.current_process().daemon:
        raise ClusterError("this worker process is daemonic, so it cannot start the grader's evaluation "
                           "worker.", hint="Start Dask workers with DASK_DISTRIBUTED__WORKER__DAEMON=False "
                           "(or `distributed.worker.daemon: false` in the Dask config).")
    assignment = spec.here()
    evaluator = Evaluator(assignment, dict(seeds))
    evaluator.start(wait=False)  # Keras imports while the first notebook starts
    atexit.register(evaluator.close)
    _state.entry = (key, assignment, evaluator)
    return assignment, evaluator


def warm_up(spec, seeds: tuple) -> None:
    """Pool initializer: start the evaluation worker before the first job arrives."""
    worker_output_to_log()
    _worker_evaluator(spec, seeds)


def measure_job(job: Job):
    """Measure one submission (runs in a worker). Returns (Measurements, memory_capped, {plot key: PNG})."""
    from .execute import compile_cache
    from .measure.student import measure_student
    from .report.cache import PlotWarmUp

    assignment, evaluator = _worker_evaluator(job.spec, job.seeds)
    if job.submission.runs_code:
        # the batch built it on its own machine: a Dask worker on another builds this one's with its first notebook
        compile_cache.for_kernels(assignment)
    with PlotWarmUp(assignment) as warming:  # the first plot of each layout, drawn while the models are measured
        measured = measure_student(assignment, job.submission, evaluator, limits=job.limits,
                                   on_evaluated=warming.evaluated, unsandboxed=job.unsandboxed)
    return measured, evaluator.memory_capped, _plots(assignment, measured)


def _plots(assignment, measured) -> dict:
    """The student's plots, drawn here; none when drawing fails (the caller draws them, or says why not)."""
    try:
        from .report.cache import draw_plots

        return draw_plots(assignment, measured)
    except Exception:
        return {}


# -- engines ----------------------------------------------------------------------


class Engine(Protocol):
    """Where students are measured.  ``run(jobs)`` yields ``(submission, (Measurements, memory_capped, plots) or
    the exception that ended that student)`` as results arrive, in any order; ``close()`` releases the workers;
    ``description`` says where, in words, for the run's record."""

    description: str

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[object, object]]: ...

    def close(self) -> None: ...


class InlineEngine:
    """Measures in this process, one student at a time (the Keras worker is still a separate process)."""

    def __init__(self, spec, seeds: dict, workers: int = 1):
        self.description = "1 worker (this process)"

    def run(self, jobs):
        for job in jobs:
            try:
                yield job.submission, measure_job(job)
            except FatalError:
                raise
            except Exception as e:  # a grader bug: this student only
                yield job.submission, e

    def close(self):
        entry = getattr(_state, "entry", None)
        if entry is not None:
            entry[2].close()
            _state.entry = None


class PoolEngine:
    """Measures in ``workers`` local processes (spawned: clean, no state of the parent)."""

    def __init__(self, spec, seeds: dict, workers: int):
        self.spec, self.seeds, self.workers = spec, tuple(sorted(seeds.items())), workers
        self.description = f"{workers} local worker processes"
        self._pool = None

    def _new_pool(self):
        self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=warm_up,
                                         initargs=(self.spec, self.seeds))

    def run(self, jobs):
        queue = list(jobs)
        queue.reverse()
        attempts: dict[int, int] = {}
        running = {}  # future -> job
        while queue or running:
            if self._pool is None:
                self._new_pool()
            while queue and len(running) < self.workers * 2:  # a small lookahead keeps workers busy
                job = queue.pop()
                running[self._pool.submit(measure_job, job)] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                job = running.pop(fut)
                try:
                    yield job.submission, fut.result()
                except BrokenProcessPool:
                    broken = True
                    n = attempts[id(job)] = attempts.get(id(job), 0) + 1
                    if n >= MAX_ATTEMPTS:
                        yield job.submission, WorkerCrashed(
                            "the grading worker process died twice while measuring this submission.")
                    else:
                        queue.append(job)
                except FatalError:
                    raise
                except Exception as e:
                    yield job.submission, e
            if broken:  # every job still in the broken pool is lost with it: run them again
                queue.extend(running.values())
                running.clear()
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskEngine:
    """Measures on a Dask distributed cluster. Workers need grader installed, the submissions at the same
    paths (a shared file system) and ``distributed.worker.daemon: false``; the spec travels with each job."""

    def __init__(self, spec, seeds: dict, workers: int = 0, *, scheduler: str):
        try:
            from distributed import Client
        except ImportError:
            raise ClusterError("--scheduler needs Dask distributed, which is not installed.",
                               hint="pip install 'grader[cluster]'") from None
        try:
            self.client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as e:
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler}: {e}",
                               hint="Check the address (tcp://host:8786) and that the scheduler is running.") \
                from None
        self.description = f"Dask cluster at {scheduler}"

    def run(self, jobs):
        from distributed import as_completed

        futures = {}
        for job in jobs:
            fut = self.client.submit(measure_job, job, pure=False, retries=MAX_ATTEMPTS - 1,
                                     key=f"grader-measure-{job.submission.student_id}-{os.urandom(4).hex()}")
            futures[fut] = job
        for fut in as_completed(futures):
            job = futures[fut]
            try:
                yield job.submission, fut.result()
            except FatalError:
                raise
            except Exception as e:  # includes a worker lost twice (KilledWorker)
                yield job.submission, e

    def close(self):
        self.client.close()


def make_engine(spec, seeds: dict, workers: int, scheduler: str | None, jobs_to_run: int) -> Engine:
    """``spec``: the batch's ``spec.FrozenSpec``."""
    if scheduler:
        return DaskEngine(spec, seeds, scheduler=scheduler)
    if workers <= 1 or jobs_to_run <= 1:
        return InlineEngine(spec, seeds)
    return PoolEngine(spec, seeds, min(workers, jobs_to_run))
