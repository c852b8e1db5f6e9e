"""Engines: where a batch's submissions are measured (this process, local worker processes, a Dask cluster).

``measure_job(job)`` measures and scores one student in a worker's ``GradingSession``; ``make_engine`` picks
an engine from the engine table (``ENGINES``).  Each yields ``(submission, outcome or exception)`` as results
arrive; the caller stores them, so the gradebook has one writer.  Why: docs/design/session.md.
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
from typing import TYPE_CHECKING, Protocol

from .errors import ClusterError, FatalError, WorkerCrashed
from .logs import worker_output_to_log

if TYPE_CHECKING:
    from .execute.limits import BatchLimits
    from .intake import Submission
    from .spec.frozen import FrozenSpec

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

    spec: FrozenSpec  # the assignment's files and parsed spec, as the batch read them
    seeds: tuple  # ((dataset, seed), ...)
    submission: Submission
    limits: BatchLimits | None = None  # the batch's notebook time limits, probed once at its start
    unsandboxed: bool = False  # the TA allowed notebooks to run where they cannot be isolated (--allow-unsandboxed)


# -- worker side -------------------------------------------------------------------

_state = threading.local()  # per thread: a Dask worker may run tasks in several threads


def _worker_session(spec, seeds: tuple):
    """The (assignment, GradingSession) of this worker thread, made once per spec and seeds and reused for every
    job."""
    from .session import GradingSession

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
    session = GradingSession(assignment, dict(seeds))
    session.start(wait=False)  # Keras imports while the first notebook starts
    atexit.register(session.close)
    _state.entry = (key, assignment, session)
    return assignment, session


def warm_up(spec, seeds: tuple) -> None:
    """Pool initializer: start the evaluation worker before the first job arrives."""
    worker_output_to_log()
    _worker_session(spec, seeds)


def measure_job(job: Job):
    """Measure and score one submission (runs in a worker). Returns (Measurements, memory_capped, (StudentResult
    or None when scoring failed here, {plot key: PNG}))."""
    from .execute import compile_cache
    from .report.cache import PlotWarmUp
    from .session import Events

    assignment, session = _worker_session(job.spec, job.seeds)
    session.limits, session.unsandboxed = job.limits, job.unsandboxed
    if job.submission.runs_code:
        # the batch built it on its own machine: a Dask worker on another builds this one's with its first notebook
        compile_cache.for_kernels(assignment)
    with PlotWarmUp(assignment) as warming:  # the first plot of each layout, drawn while the models are measured
        events = Events()
        events.evaluated = warming.evaluated
        measured = session.measure(job.submission, events)
    try:
        result = session.score(measured, events)
    except Exception:  # the caller scores it again, and reports the grader's failure with its traceback
        return measured, session.evaluator.memory_capped, (None, {})
    return measured, session.evaluator.memory_capped, (result, _plots(session, result, events))


def _plots(session, result, events=None) -> dict:
    """The student's plots, drawn here; none when drawing fails (the caller draws them, or says why not)."""
    try:
        return session.plots(result, events)
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

    def __init__(self, spec, seeds: dict, workers: int = 1, scheduler: str | None = None):
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

    def __init__(self, spec, seeds: dict, workers: int, scheduler: str | None = None):
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

    def __init__(self, spec, seeds: dict, workers: int = 0, scheduler: str | None = None):
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


#: the engines, the first whose rule holds is chosen: (name, rule(workers, scheduler, jobs to run), class)
ENGINES = (
    ("dask", lambda workers, scheduler, jobs: bool(scheduler), DaskEngine),
    ("inline", lambda workers, scheduler, jobs: workers <= 1 or jobs <= 1, InlineEngine),
    ("pool", lambda workers, scheduler, jobs: True, PoolEngine),
)


def make_engine(spec, seeds: dict, workers: int, scheduler: str | None, jobs_to_run: int) -> Engine:
    """The engine ``ENGINES`` chooses.  ``spec``: the batch's ``spec.FrozenSpec``."""
    engine = next(cls for _, rule, cls in ENGINES if rule(workers, scheduler, jobs_to_run))
    return engine(spec, seeds, min(workers, jobs_to_run), scheduler)
