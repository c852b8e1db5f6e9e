"""The batch: decides per student what to redo (nothing, re-score, measure) from the stage keys in the
gradebook (``store.keys``), measures on an engine, stores each result the moment it is known and writes
the pages and ``results.json``.  ``refresh_reports`` re-draws them from the gradebook alone.
Why: docs/design/session.md.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import versions
from .engines import Job, default_workers, make_engine
from .errors import FatalError, OutputError
from .evaluate import dataset_seeds, resolve_secret
from .execute import compile_cache
from .execute.sandbox import describe as sandbox_words, prove_isolation
from .intake import collect
from .report import Reporter, atomic_write
from .measure import Measurements
from .review import INTERNAL_ERROR, fingerprints, identical_work
from .score import attach_plots, score_student
from .score.classwide import class_warnings
from .records import StudentResult, TaskResult
from .session import Events, retrain_key
from .spec import freeze, load_assignment
from .store import DEFAULT_NAME, Gradebook, OutputLock, keys
from .logs import batch_log, log

LOG_NAME = "grader.log"  # in the output folder: internal errors with their tracebacks
REPORT_BUILD_FILE = ".report-build"  # the report code the pages were drawn with (a change re-draws them)
REDRAW_CHUNK = 100  # students whose pages are re-drawn together (their plots drawn at once on several processes)

MEMORY_CAP_WARNING = ("This platform refused the evaluation worker's memory cap: a model that claims huge layers "
                      "is still refused by the parameter budget, but not stopped by the cap.")


class BatchProgress(Events):
    """What a batch tells its caller while it runs (``session.Events``: override what you show).  The batch
    never prints; ``grader grade`` (``cli.py``) draws its progress bar from these."""


@dataclass
class BatchSummary:
    students: int
    out_dir: Path
    results_path: Path
    index_path: Path
    counts: dict = field(default_factory=dict)  # measured / rescored / cached, and passed / failed / error
    seconds: float = 0.0
    gradebook: str = ""


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _internal_error(assignment, student_id: str, exc: BaseException) -> StudentResult:
    """A student whose grading hit a grader bug: every task 'error', with the reason.  The full traceback
    (a worker process's included) goes to the batch's log for the TA; the report keeps a short form."""
    log.error("internal error while grading %r:\n%s", student_id,
              "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    text = (f"{INTERNAL_ERROR} ({type(exc).__name__}: {str(exc)[:300]}); a TA will look at "
            f"it (the full traceback is in the batch's {LOG_NAME}).")
    tasks = [TaskResult(t.id, t.title, 0.0, t.points, "error", {}, text, optional=t.optional)
             for t in assignment.tasks]
    return StudentResult(student_id, 0.0, assignment.max_score, tasks, notes=[text])


@dataclass
class _Plan:
    submission: object
    content: str
    files: list
    measure_key: str
    score_key: str
    action: str  # "cached" | "rescore" | "measure"


def grade_batch(submissions, assignment_dir, out_dir, progress: BatchProgress | None = None, *,
                workers: int | None = None, scheduler: str | None = None, force: bool = False,
                db_url: str | None = None, wait: float = 0.0, allow_unsandboxed: bool = False,
                assignment_sha256: str | None = None) -> BatchSummary:
    """Grade every submission in ``submissions`` into ``out_dir`` (see the module doc); print nothing.

    ``progress``: hooks that hear what the batch does (``BatchProgress``).  ``allow_unsandboxed``: run
    notebooks even where they cannot be isolated (otherwise a ``FatalError``).  ``assignment_sha256``: the
    assignment folder's pinned hash (``spec.assignment_digest``): another folder is refused, nothing of it run."""
    progress = progress or BatchProgress()
    started = time.monotonic()
    submissions, out_dir = Path(submissions), Path(out_dir)
    # read once: every worker grades with these very bytes (refused before any import when not the pinned ones)
    spec = freeze(assignment_dir, expected_digest=assignment_sha256)
    assignment = spec.parsed
    if not submissions.is_dir():
        raise FatalError(f"the submissions folder {submissions} does not exist or is not a folder")
    if _inside(out_dir, submissions):
        raise OutputError(f"the output folder {out_dir} is inside the submissions folder {submissions}: "
                          "the grading secret and the reports must never sit beside the submissions. "
                          "Choose another --out.")
    with OutputLock(out_dir, wait=wait):
        secret = resolve_secret(out_dir)
        if secret.created:
            progress.secret_created(str(secret.origin))
        seeds = dataset_seeds(assignment, secret.value)
        gradebook = Gradebook(db_url, out_dir)
        try:
            with batch_log(out_dir / LOG_NAME):
                try:
                    return _run(spec, submissions=submissions, out_dir=out_dir, progress=progress,
                                gradebook=gradebook, seeds=seeds, workers=workers, scheduler=scheduler, force=force,
                                started=started, allow_unsandboxed=allow_unsandboxed)
                except FatalError as e:  # the log of an unattended batch says why it stopped, as the terminal does
                    log.error("the batch stopped: %s", e.explain())
                    raise
        finally:
            gradebook.close()


def _read_small(path: Path) -> str | None:
    try:
        return path.read_text()[:200]
    except OSError:
        return None


def _plan(assignment, students, gradebook, seeds, force: bool, grading_versions: dict | None = None) -> list[_Plan]:
    """What to do for each student, by the stage keys (``store.keys``): a changed measure key measures, a changed
    score key re-scores the stored measurements (or measures, where re-training would read otherwise), else the
    stored result stands.  ``grading_versions``: the batch's ``versions.current()``."""
    measure_fp = keys.measure_fingerprint(assignment, seeds, grading_versions)
    score_fp = keys.score_fingerprint(assignment)
    stored = gradebook.state(assignment.id)
    plans = []
    for sub in students:
        content, files = keys.submission_hash(sub)
        mkey = keys.measure_key(content, measure_fp)
        skey = keys.score_key(mkey, score_fp)
        known = stored.get(sub.student_id)
        if force or known is None or mkey not in known.measure_keys:
            action = "measure"
        elif known.score_key != skey:
            stored_runs = Measurements.from_json(gradebook.measurements(assignment.id, sub.student_id, mkey))
            action = "rescore" if _retrained_alike(assignment, stored_runs) else "measure"
        else:
            action = "cached"
        plans.append(_Plan(sub, content, files, mkey, skey, action))
    return plans


def _retrained_alike(assignment, measured: Measurements) -> bool:
    """Whether re-training these runs would read what it read when they were measured (the same recipes,
    tasks, K and pass thresholds): then re-scoring gives what a fresh grade gives.  A gradebook written before
    the key was kept: re-scored, as it always was."""
    return measured.retrain_key is None or measured.retrain_key == retrain_key(assignment, measured)


def _run(spec, *, submissions: Path, out_dir: Path, progress: BatchProgress, gradebook, seeds: dict,
         workers: int | None, scheduler: str | None, force: bool, started: float, allow_unsandboxed: bool):
    batch = _Batch(spec, out_dir, progress, gradebook, seeds)
    plans, to_measure, no_sandbox, limits = batch.prepare(submissions, force, allow_unsandboxed)
    workers = workers or default_workers()
    engine = make_engine(spec, seeds, workers, scheduler, len(to_measure)) if to_measure else None
    batch.run_id = gradebook.begin_run(batch.assignment, engine.description if engine else
                                       "none (nothing to measure)", versions=batch.versions)
    status = "failed"
    try:
        progress.started(len(plans))
        batch.unchanged(plans, workers)
        if engine is not None:
            progress.status(f"measuring on {engine.description}")
            jobs = [Job(spec, tuple(sorted(seeds.items())), p.submission, limits, unsandboxed=bool(no_sandbox))
                    for p in to_measure]
            batch.measured(engine.run(jobs), {p.submission.student_id: p for p in plans})
        progress.status("")
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        progress.finished()
        if engine is not None:
            engine.close()
        batch.stop(status)
    return batch.finish(len(plans), started)


class _Batch:
    """One batch's state: its reporter, counts and run; each step of ``_run`` a method."""

    def __init__(self, spec, out_dir: Path, progress: BatchProgress, gradebook, seeds: dict):
        self.spec, self.assignment, self.out_dir, self.progress = spec, spec.parsed, out_dir, progress
        self.gradebook, self.seeds = gradebook, seeds
        self.reporter = Reporter(self.assignment, out_dir, keep_plots=True)
        self.versions = versions.current()  # stored with the run; other ones than calibration's are warned about
        self.counts = {"measured": 0, "rescored": 0, "cached": 0, "passed": 0, "failed": 0, "error": 0}
        self.run_id = None
        self.warned_cap = False

    def warn(self, text: str, severe: bool = False) -> None:
        self.progress.warning(text, severe=severe) if severe else self.progress.warning(text)
        if severe:  # grading without a safeguard: in the batch's log too
            log.warning("%s", text)
        self.reporter.warnings.append(text)

    def prepare(self, submissions: Path, force: bool, allow_unsandboxed: bool):
        """The plans, those to measure, why the sandbox cannot start (None: it can) and the time limits."""
        assignment, progress = self.assignment, self.progress
        students = collect(submissions, assignment)
        for warning in _batch_warnings(assignment, students, self.versions):
            self.warn(warning)
        plans = _plan(assignment, students, self.gradebook, self.seeds, force, self.versions)
        changed = versions.differences(self.gradebook.latest_versions(assignment.id), self.versions)
        if changed and not force and any(p.action == "measure" for p in plans):
            said = "; ".join(f"{n} {now or 'not installed'} (the last run's: {then})" for n, then, now in changed)
            progress.note(f"Other versions than the last batch's: {said}. What a model measures depends on them, "
                          "so the students it graded are measured again.")
        to_measure = [p for p in plans if p.action == "measure"]
        code = [p.submission.student_id for p in to_measure if p.submission.runs_code]
        no_sandbox = prove_isolation() if code else None  # the sandbox started here, now, with the runs' flags
        if code and not no_sandbox:  # which sandbox the notebooks run in, on the terminal and in grader.log
            progress.note(sandbox_words())
            log.info("%s", sandbox_words())
        if no_sandbox:
            if not allow_unsandboxed:
                raise FatalError(f"{len(code)} submission(s) hold notebooks or scripts, and this machine cannot "
                                 f"run them isolated. {no_sandbox}",
                                 hint="Grade on a machine with bubblewrap (as root, or with user namespaces), or "
                                      "pass --allow-unsandboxed to run every student's code with your own "
                                      "permissions.")
            self.warn(no_sandbox, severe=True)
        limits = _time_limits(assignment, progress, self.reporter) if code else None  # before workers load it
        if code and compile_cache.read_by_kernels(assignment) and compile_cache.ready(assignment) is None:
            progress.status("compiling the reference solution's training programs for the notebooks (once per "
                            "machine and software version)")
            compile_cache.for_kernels(assignment)
        return plans, to_measure, no_sandbox, limits

    def done(self, plan, result, measured, how, *, failed=False):
        """Store a student's result (with the overrides in force put over it) and report it."""
        # a student the grader failed on is stored under a key no later run matches: it is retried
        mkey = f"retry-{plan.measure_key}"[:64] if failed else plan.measure_key
        stored = self.gradebook.record(
            self.assignment.id, self.run_id, result.id, content_hash=plan.content, files=plan.files,
            measure_key=mkey, score_key=plan.score_key,
            measurements=measured.to_json() if how == "measured" else None, result=result,
            identity=_fingerprints(self.assignment, plan, measured, result))
        result = StudentResult.from_json(stored)  # the overrides in force, put over it
        self.reporter.add(attach_plots(result, measured), stored=stored)
        self.tally(how, result)

    def tally(self, how: str, result) -> None:
        self.counts[how] += 1
        self.counts[result.outcome] += 1
        self.progress.student_done(result.id, dict(self.counts))

    def unchanged(self, plans, workers: int) -> None:
        """What needs no running first (it is instant): the cached students, and those re-scored."""
        assignment, gradebook = self.assignment, self.gradebook
        stale_pages = _read_small(self.out_dir / REPORT_BUILD_FILE) != keys.code_hash(keys.REPORTING_CODE)
        unchanged = {r["id"]: r for r in gradebook.results(
            assignment.id, [p.submission.student_id for p in plans if p.action == "cached"])}
        unprinted = {sid for sid, identity in gradebook.identities(assignment.id).items() if identity is None}
        redraws = []  # (result, stored) of unchanged students whose pages are drawn again
        for plan in plans:
            sid = plan.submission.student_id
            if plan.action == "cached":
                stored = unchanged[sid]
                result = StudentResult.from_json(stored)
                self.reporter.add(result, render=False, stored=stored)
                # a page drawn before an override was made or undone shows an old score: overridden
                # students' pages are re-drawn (few, and only from stored measurements)
                redraw = stale_pages or not self.reporter.page_path(sid).exists() or "automatic" in stored
                if redraw or sid in unprinted:
                    measured = Measurements.from_json(gradebook.current_measurements(assignment.id, sid))
                    if sid in unprinted:  # graded before fingerprints were kept
                        identity = _fingerprints(assignment, plan, measured, result)
                        if identity is not None:
                            gradebook.set_identity(assignment.id, sid, identity)
                    if redraw:
                        redraws.append((attach_plots(result, measured), stored))
                self.tally("cached", result)
            elif plan.action == "rescore":
                self.progress.status(f"re-scoring {sid}")
                measured = Measurements.from_json(gradebook.measurements(assignment.id, sid, plan.measure_key))
                self.done(plan, _score(assignment, measured), measured, "rescored")
        self.reporter.prepare([r for r, _ in redraws], workers)  # plots the pages lack, on several processes
        for result, stored in redraws:
            self.reporter.add(result, stored=stored)

    def measured(self, outcomes, by_id: dict) -> None:
        """Each measured student as its engine gives it back: stored and reported."""
        for sub, outcome in outcomes:
            plan = by_id[sub.student_id]
            if isinstance(outcome, BaseException):
                result = _internal_error(self.assignment, sub.student_id, outcome)
                measured = Measurements(sub.student_id, [], list(result.notes), [], {}, [])
                self.done(plan, result, measured, "measured", failed=True)
                continue
            measured, capped, (result, drawn) = outcome
            self.reporter.plots.add(drawn)  # the plots its worker drew: its page takes them
            if capped is False and not self.warned_cap:
                self.warned_cap = True
                self.reporter.warnings.append(MEMORY_CAP_WARNING)
                self.progress.warning(MEMORY_CAP_WARNING)
            self.done(plan, _score(self.assignment, measured) if result is None else result, measured, "measured")

    def stop(self, status: str) -> None:
        """The run's end in the gradebook (and what was done so far in results.json, when it did not finish)."""
        reporter = self.reporter
        self.counts.update(plots_drawn=reporter.plots.drawn, plots_reused=reporter.plots.reused)
        try:
            self.gradebook.finish_run(self.run_id, status, self.counts)
            if status != "finished" and reporter.results:
                reporter.write_json()  # what was done so far, for whoever reads results.json
        except FatalError:
            if status == "finished":
                raise

    def finish(self, students: int, started: float) -> BatchSummary:
        """The class's warnings, results.json and index page."""
        reporter, out_dir = self.reporter, self.out_dir
        for warning in class_warnings(self.assignment, list(reporter.results.values())):  # a class at chance
            self.warn(warning)
        reporter.write_json()
        reporter.write_index(identical=identical_work(self.gradebook.identities(self.assignment.id),
                                                      among=reporter.results))
        atomic_write(out_dir / REPORT_BUILD_FILE, keys.code_hash(keys.REPORTING_CODE))
        reporter.forget_unused_plots()
        return BatchSummary(students, out_dir, out_dir / "results.json", out_dir / "index.html", self.counts,
                            time.monotonic() - started, self.gradebook.where)


def _time_limits(assignment, progress: BatchProgress, reporter):
    """The notebooks' time limits for this batch (``execute.limits.batch_limits``: the speed probe runs once,
    here), told to the caller, in the batch's log and in ``results.json``."""
    from .execute.limits import batch_limits

    limits = batch_limits(assignment)
    line = limits.describe()
    log.info("%s", line)
    progress.note(line)
    for note in limits.notes:
        progress.warning(note)
        reporter.warnings.append(note)
    reporter.time_limits = limits.to_json()
    return limits


def _batch_warnings(assignment, students, grading_versions: dict | None = None) -> list[str]:
    """What the TA must know about the whole batch: grading with other versions than the calibration's
    (``grading_versions``: the batch's), synthetic held-out data, files that belong to nobody."""
    out = [w for w in [versions.mismatch(assignment.calibrated_versions, grading_versions)] if w and grading_versions]
    out += [ds.heldout_note for _, ds in sorted(assignment.datasets.items()) if ds.heldout_note]
    unrecognised = getattr(students, "unrecognised", [])
    if unrecognised:
        shown = ", ".join(unrecognised[:20]) + (f" and {len(unrecognised) - 20} more" if len(unrecognised) > 20 else "")
        out.append(f"Unrecognised files in the submissions folder, not graded: {shown}. The names the course asks "
                   f"for are {assignment.intake.file_name('username', 'N')}"
                   + "".join(f" or {assignment.intake.file_name('username', 'N', t.preprocessing.suffix)}"
                             for t in assignment.tasks[:1] if t.preprocessing) + ".")
    return out


def _fingerprints(assignment, plan: _Plan, measured: Measurements, result: StudentResult) -> dict | None:
    """``review.fingerprints`` of a plan's submission; None (and the traceback in the log) if they cannot be
    taken: identical work is a TA's hint, never a reason to stop a batch."""
    try:
        return fingerprints(assignment, plan.submission, plan.files, measured, result)
    except Exception:
        log.exception("could not take the fingerprints of %r", plan.submission.student_id)
        return None


def _score(assignment, measured: Measurements) -> StudentResult:
    try:
        return score_student(assignment, measured)
    except Exception as exc:  # a grader bug must not end the batch
        return _internal_error(assignment, measured.student_id, exc)


def render_reports(assignment_dir, out_dir, *, db_url: str | None = None, wait: float = 0.0) -> BatchSummary:
    """Re-render every student's page, ``results.json`` and ``index.html`` from the gradebook alone:
    no notebook runs, no model is loaded."""
    started = time.monotonic()
    assignment = load_assignment(assignment_dir)
    out_dir = Path(out_dir)
    if db_url is None and not (out_dir / DEFAULT_NAME).is_file():  # asked to read: create nothing
        raise FatalError(f"no gradebook in {out_dir} (expected {out_dir / DEFAULT_NAME}); run `grader grade` first, "
                         "or give the --out it wrote to.")
    with OutputLock(out_dir, wait=wait):
        gradebook = Gradebook(db_url, out_dir)
        try:
            counts = {}
            n = refresh_reports(assignment, out_dir, gradebook, counts=counts)
        finally:
            gradebook.close()
    return BatchSummary(n, out_dir, out_dir / "results.json", out_dir / "index.html", counts,
                        seconds=time.monotonic() - started, gradebook=gradebook.where)


def refresh_reports(assignment, out_dir: Path, gradebook, pages=None, counts: dict | None = None) -> int:
    """Write ``results.json``, ``index.html`` and the pages of ``pages`` (student ids; every student when None)
    from the gradebook alone, for a caller that holds the output folder's lock.  Returns the number of
    students; ``counts`` gets the plots drawn and those reused (kept from an earlier drawing)."""
    stored = gradebook.results(assignment.id)
    if not stored:
        raise FatalError(f"the gradebook {gradebook.where} has no results for {assignment.id}; "
                         "run `grader grade` first.")
    # the spec's own warnings, and the versions of the latest run against the calibration's
    reporter = Reporter(assignment, out_dir, warnings=_batch_warnings(assignment, [],
                                                                      gradebook.latest_versions(assignment.id)),
                        keep_plots=True)
    workers = default_workers()
    for start in range(0, len(stored), REDRAW_CHUNK):
        chunk = []
        for data in stored[start:start + REDRAW_CHUNK]:
            result = StudentResult.from_json(data)
            draw = pages is None or result.id in pages
            if draw:
                measured = gradebook.current_measurements(assignment.id, result.id)
                if measured is not None:
                    attach_plots(result, Measurements.from_json(measured))
            chunk.append((result, draw, data))
        reporter.prepare([r for r, draw, _ in chunk if draw], workers)  # plots not kept yet, on several processes
        for result, draw, data in chunk:
            reporter.add(result, render=draw, stored=data)
    reporter.write_json()
    reporter.write_index(identical=identical_work(gradebook.identities(assignment.id), among=reporter.results))
    reporter.forget_unused_plots()
    if counts is not None:
        counts.update(plots_drawn=reporter.plots.drawn, plots_reused=reporter.plots.reused)
    return len(stored)
