"""The gradebook: a real database of assignments, students, submissions, runs and results.

SQLite in the output folder, or any SQLAlchemy URL (``--db``).  Each student's result is written in one
transaction with the measurements it came from, so a killed batch leaves no half-written student.  Results
are stored and read with the overrides in force put over them (``overrides.apply_overrides``).  Older
gradebooks are upgraded in place.  The tables and schema versions: docs/design/store.md.
"""
from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from .. import __version__
from ..errors import GradebookError
from ..textsafe import json_text
from . import codec
from .overrides import apply_overrides, outcome

SCHEMA_VERSION = 4
DEFAULT_NAME = "gradebook.sqlite"
#: the gradebook holds every student's grades: readable and writable by its owner only
PRIVATE_FILE = 0o600

metadata = sa.MetaData()

meta = sa.Table("meta", metadata, sa.Column("key", sa.String(64), primary_key=True),
                sa.Column("value", sa.Text, nullable=False))
assignments = sa.Table(
    "assignments", metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("max_score", sa.Float, nullable=False),
    sa.Column("tasks", sa.Text, nullable=False),  # JSON [{id, title, points, optional}]
    sa.Column("grade_bands", sa.Text),  # JSON [[letter, minimum percent], ...] or null (schema 2)
    sa.Column("spec_folder", sa.Text),  # the assignment folder last graded from (schema 2)
)
students = sa.Table(
    "students", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("assignment_id", sa.String(128), sa.ForeignKey("assignments.id"), nullable=False),
    sa.Column("student_id", sa.String(256), nullable=False),
    sa.UniqueConstraint("assignment_id", "student_id"),
)
submissions = sa.Table(
    "submissions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("student", sa.Integer, sa.ForeignKey("students.id"), nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("measure_key", sa.String(64), nullable=False),
    sa.Column("files", sa.Text, nullable=False),  # JSON [{name, sha256, bytes}]
    sa.Column("measurements", sa.LargeBinary, nullable=False),  # codec-encoded Measurements
    sa.Column("measured_at", sa.String(32), nullable=False),
    sa.Column("identity", sa.Text),  # JSON fingerprints of the work (``grader.review.fingerprints``; schema 2)
    sa.UniqueConstraint("student", "measure_key"),
)
runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("assignment_id", sa.String(128), sa.ForeignKey("assignments.id"), nullable=False),
    sa.Column("started_at", sa.String(32), nullable=False),
    sa.Column("finished_at", sa.String(32)),
    sa.Column("status", sa.String(16), nullable=False),  # running | finished | failed | interrupted
    sa.Column("grader_version", sa.String(64), nullable=False),
    sa.Column("engine", sa.Text, nullable=False),
    sa.Column("counts", sa.Text),  # JSON {graded, rescored, cached, ...}
    sa.Column("versions", sa.Text),  # JSON {python, keras, jax, ...}: what the run graded with (schema 3)
)
results = sa.Table(
    "results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("student", sa.Integer, sa.ForeignKey("students.id"), nullable=False, unique=True),
    sa.Column("submission", sa.Integer, sa.ForeignKey("submissions.id"), nullable=False),
    sa.Column("run", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("score_key", sa.String(64), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("max_score", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # passed | failed | error
    sa.Column("result", sa.Text, nullable=False),  # StudentResult.to_json()
    sa.Column("graded_at", sa.String(32), nullable=False),
    # JSON: what the run before this one left the student with (``previous_of``), {"new": true} for their first
    # result; null when recorded before schema 4 (not known)
    sa.Column("previous", sa.Text),
)
task_results = sa.Table(
    "task_results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("result", sa.Integer, sa.ForeignKey("results.id", ondelete="CASCADE"), nullable=False),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("max_score", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("source", sa.Text),
    sa.UniqueConstraint("result", "task_id"),
)
overrides = sa.Table(
    "overrides", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("student", sa.Integer, sa.ForeignKey("students.id"), nullable=False, index=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(8), nullable=False),  # set | undo; the latest row of a task is in force
    sa.Column("points", sa.Float),  # null for an undo
    sa.Column("replaced_score", sa.Float, nullable=False),  # the grader's score of the task at the time
    sa.Column("replaced_status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("by", sa.String(128), nullable=False),
    sa.Column("at", sa.String(32), nullable=False),
)

#: what each schema version added to existing tables (new tables are created by ``create_all``)
ADDED_COLUMNS = {2: [(assignments, "grade_bands"), (assignments, "spec_folder"), (submissions, "identity")],
                 3: [(runs, "versions")], 4: [(results, "previous")]}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plain(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e)
    low = text.lower()
    if "full" in low or "no space" in low:
        return "the disk is full"
    if "readonly" in low or "read-only" in low or "read only" in low:
        return "the gradebook or its folder is read-only"
    if "unable to open" in low:
        return "the gradebook file cannot be opened (does its folder exist, and may it be written?)"
    if "locked" in low:
        return "the gradebook is locked by another process"
    return text.splitlines()[0][:300]


class ChangedSince(GradebookError):
    """An override decided on a task as it was, refused: another TA (or a re-grade) changed it since."""

    def __init__(self, task_id: str, latest: dict | None):
        if latest is None:
            what = "it was graded again"
        elif latest["action"] == "undo":
            why = f" ({latest['reason']})" if latest["reason"] else ""  # an undo's reason is optional
            what = f"{latest['by']} undid its override at {latest['at']}{why}"
        else:
            what = f"{latest['by']} set it to {latest['points']:g} at {latest['at']} ({latest['reason']})"
        super().__init__(f"Another TA changed this task since you opened the page: {what}. Nothing was "
                         "changed; reload the page to see the task as it stands, then decide again.")
        self.task_id, self.latest = task_id, latest


#: ``_write_result``: keep the replaced row's ``previous``
_KEEP = object()


def automatic_score(part: dict | None) -> float | None:
    """The grader's own score under a TA's, of a result or of a task's override (``part``); None without one."""
    return ((part or {}).get("automatic") or {}).get("score")


def previous_of(payload: dict, run: int) -> dict:
    """What a result (its stored JSON, the overrides then in force over it) gave, kept when a later run replaces
    it: ``{"run", "score", "automatic", "tasks": {id: {"score", "automatic"}}}``, ``automatic`` the grader's own
    score under a TA's (None without one, ``automatic_score``)."""
    return {"run": run, "score": payload["score"], "automatic": automatic_score(payload),
            "tasks": {t["id"]: {"score": t["score"], "automatic": automatic_score(t.get("override"))}
                      for t in payload["tasks"]}}


@dataclass
class Stored:
    """What the gradebook knows of one student."""

    score_key: str | None
    measure_keys: set[str]


class Gradebook:
    """One gradebook (a SQLAlchemy database): what ``grader grade`` records and every other command reads."""

    def __init__(self, url: str | None = None, out_dir: Path | None = None):
        if url is None:
            if out_dir is None:
                raise ValueError("a gradebook needs a URL or an output folder")
            path = Path(out_dir) / DEFAULT_NAME
            url = f"sqlite:///{path}"
            self.where = str(path)
        else:
            url = _with_driver(url)
            self.where = url.render_as_string(hide_password=True)
        try:
            self.engine = sa.create_engine(url)
        except ImportError as e:
            hint = " (install the PostgreSQL driver: pip install 'grader[postgres]')" \
                if self.where.startswith("postgresql") else ""
            raise GradebookError(f"cannot use the gradebook URL {self.where}: {e}{hint}") from None
        except sa.exc.ArgumentError as e:
            raise GradebookError(f"cannot use the gradebook URL {self.where}: {e}") from None
        if self.engine.dialect.name == "sqlite":
            _make_private(self.engine.url.database)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        with self._errors("open"):
            metadata.create_all(self.engine)
            with self.engine.begin() as c:
                row = c.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first()
                if row is None:
                    c.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise GradebookError(f"the gradebook {self.where} was written by a newer grader (schema "
                                         f"{row[0]}); upgrade grader to use it.")
                elif int(row[0]) < SCHEMA_VERSION:
                    _migrate(c, int(row[0]))

    @contextmanager
    def _errors(self, doing: str):
        try:
            yield
        except sa.exc.SQLAlchemyError as e:
            raise GradebookError(f"could not {doing} the gradebook {self.where}: {_plain(e)}. Every result "
                                 "already recorded is complete; nothing half-written was kept.") from None

    def close(self):
        self.engine.dispose()

    # -- runs ------------------------------------------------------------------
    def begin_run(self, assignment, engine: str, versions: dict | None = None) -> int:
        tasks = json.dumps([{"id": t.id, "title": t.title, "points": t.points, "optional": t.optional}
                            for t in assignment.tasks])
        bands = json.dumps([list(b) for b in assignment.grades.bands]) if assignment.grades else None
        with self._errors("start a run in"), self.engine.begin() as c:
            row = dict(id=assignment.id, title=assignment.title, max_score=assignment.max_score, tasks=tasks,
                       grade_bands=bands, spec_folder=str(Path(assignment.folder).resolve()))
            if c.execute(sa.select(assignments.c.id).where(assignments.c.id == assignment.id)).first():
                c.execute(assignments.update().where(assignments.c.id == assignment.id).values(**row))
            else:
                c.execute(assignments.insert().values(**row))
            # only one grader holds the output folder, so a run still 'running' was killed
            c.execute(runs.update().where(runs.c.status == "running").values(status="interrupted"))
            return c.execute(runs.insert().values(assignment_id=assignment.id, started_at=now(), status="running",
                                                  grader_version=__version__, engine=engine,
                                                  versions=json.dumps(versions) if versions else None)
                             ).inserted_primary_key[0]

    def latest_versions(self, assignment_id: str) -> dict | None:
        """The versions the latest run of ``assignment_id`` graded with (``grader.versions.current``); None
        when it recorded none (before schema 3) or there is no run."""
        q = sa.select(runs.c.versions).where(runs.c.assignment_id == assignment_id).order_by(runs.c.id.desc())
        with self._errors("read"), self.engine.connect() as c:
            text = c.execute(q.limit(1)).scalar()
        return json.loads(text) if text else None

    def last_batch(self, assignment_id: str) -> dict | None:
        """The latest finished run of ``assignment_id``: ``{"run", "started_at", "finished_at", "counts",
        "students", "previous", "earlier"}``, ``students`` the ids whose current result it recorded (graded or
        re-scored by it; a student it found unchanged keeps an older run's result), ``previous`` what each of them
        had before it (``previous_of``; None when recorded before it was kept), ``earlier`` how many runs
        finished before it; None when no run has finished."""
        with self._errors("read"), self.engine.connect() as c:
            row = c.execute(sa.select(runs.c.id, runs.c.started_at, runs.c.finished_at, runs.c.counts)
                            .where(runs.c.assignment_id == assignment_id, runs.c.status == "finished")
                            .order_by(runs.c.id.desc()).limit(1)).first()
            if row is None:
                return None
            got = c.execute(sa.select(students.c.student_id, results.c.previous)
                            .join(results, results.c.student == students.c.id)
                            .where(students.c.assignment_id == assignment_id, results.c.run == row.id)
                            .order_by(students.c.student_id)).all()
            earlier = c.execute(sa.select(sa.func.count()).select_from(runs).where(
                runs.c.assignment_id == assignment_id, runs.c.status == "finished", runs.c.id < row.id)).scalar()
        return {"run": row.id, "started_at": row.started_at, "finished_at": row.finished_at,
                "counts": json.loads(row.counts) if row.counts else {}, "students": [sid for sid, _ in got],
                "previous": {sid: json.loads(previous) if previous else None for sid, previous in got},
                "earlier": earlier}

    def finish_run(self, run_id: int, status: str, counts: dict) -> None:
        with self._errors("finish the run in"), self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.id == run_id).values(status=status, finished_at=now(),
                                                                       counts=json.dumps(counts)))

    # -- students -------------------------------------------------------------
    def _student_pk(self, c, assignment_id: str, student_id: str, create: bool) -> int | None:
        q = sa.select(students.c.id).where(students.c.assignment_id == assignment_id,
                                           students.c.student_id == student_id)
        row = c.execute(q).first()
        if row is None and create:
            return c.execute(students.insert().values(assignment_id=assignment_id,
                                                      student_id=student_id)).inserted_primary_key[0]
        return row[0] if row else None

    def state(self, assignment_id: str) -> dict[str, Stored]:
        """Every student's current score key and stored measure keys, in two queries."""
        out: dict[str, Stored] = {}
        with self._errors("read"), self.engine.connect() as c:
            q = (sa.select(students.c.student_id, submissions.c.measure_key)
                 .join(submissions, submissions.c.student == students.c.id)
                 .where(students.c.assignment_id == assignment_id))
            for sid, mkey in c.execute(q):
                out.setdefault(sid, Stored(None, set())).measure_keys.add(mkey)
            q = (sa.select(students.c.student_id, results.c.score_key)
                 .join(results, results.c.student == students.c.id)
                 .where(students.c.assignment_id == assignment_id))
            for sid, skey in c.execute(q):
                out.setdefault(sid, Stored(None, set())).score_key = skey
        return out

    def measurements(self, assignment_id: str, student_id: str, measure_key: str):
        with self._errors("read"), self.engine.connect() as c:
            q = (sa.select(submissions.c.measurements).join(students, submissions.c.student == students.c.id)
                 .where(students.c.assignment_id == assignment_id, students.c.student_id == student_id,
                        submissions.c.measure_key == measure_key))
            row = c.execute(q).first()
        return codec.decode(row[0]) if row else None

    def record(self, assignment_id: str, run_id: int, student_id: str, *, content_hash: str, files: list,
               measure_key: str, score_key: str, measurements: dict | None, result,
               identity: dict | None = None) -> dict:
        """Store one student's measurements and result in one transaction (all or nothing).  ``identity``: the
        submission's fingerprints (kept as they were when None).  Returns the result as stored: its JSON with
        the overrides in force put over it."""
        blob = codec.encode(measurements) if measurements is not None else None
        payload = result.to_json()
        with self._errors(f"record {student_id} in"), self.engine.begin() as c:
            pk = self._student_pk(c, assignment_id, student_id, create=True)
            sub = c.execute(sa.select(submissions.c.id).where(submissions.c.student == pk,
                                                              submissions.c.measure_key == measure_key)).first()
            fingerprints = {} if identity is None else {"identity": json.dumps(identity, sort_keys=True)}
            if sub is None:
                if blob is None:
                    raise GradebookError(f"no stored measurements for {student_id}; grade again with --force")
                sub_id = c.execute(submissions.insert().values(
                    student=pk, content_hash=content_hash, measure_key=measure_key, files=json.dumps(files),
                    measurements=blob, measured_at=now(), **fingerprints)).inserted_primary_key[0]
            else:
                sub_id = sub[0]
                if blob is not None:
                    c.execute(submissions.update().where(submissions.c.id == sub_id).values(
                        measurements=blob, measured_at=now(), files=json.dumps(files), **fingerprints))
                elif fingerprints:
                    c.execute(submissions.update().where(submissions.c.id == sub_id).values(**fingerprints))
            apply_overrides(payload, self._in_force(c, [pk]).get(pk, {}), self._bands(c, assignment_id))
            old = c.execute(sa.select(results.c.run, results.c.result, results.c.previous)
                            .where(results.c.student == pk)).first()
            # what the student had before this run: the result it replaces (an earlier run's), or what that
            # one had before (the same run recording the student again keeps it)
            previous = json.dumps({"new": True}) if old is None else \
                old.previous if old.run == run_id else json.dumps(previous_of(json.loads(old.result), old.run))
            self._write_result(c, pk, payload, previous=previous, submission=sub_id, run=run_id,
                               score_key=score_key, graded_at=now())
        return payload

    @staticmethod
    def _write_result(c, pk: int, payload: dict, previous=_KEEP, **row) -> None:
        """Replace the student's current result (and its task rows) with ``payload``; ``previous`` (the column's
        JSON text) kept from the row replaced unless given."""
        old = c.execute(sa.select(results.c.id, results.c.previous).where(results.c.student == pk)).first()
        if previous is _KEEP:
            previous = old.previous if old is not None else None
        if old is not None:
            c.execute(task_results.delete().where(task_results.c.result == old[0]))
            c.execute(results.delete().where(results.c.id == old[0]))
        rid = c.execute(results.insert().values(  # json_text: lone surrogates as JSON escapes
            student=pk, score=payload["score"], max_score=payload["max_score"], outcome=outcome(payload),
            result=json_text(payload), previous=previous, **row)).inserted_primary_key[0]
        c.execute(task_results.insert(), [
            dict(result=rid, task_id=t["id"], score=t["score"], max_score=t["max_score"], status=t["status"],
                 metrics=json.dumps(t["metrics"]), message=_no_nul(t["message"]), source=_no_nul(t.get("source")))
            for t in payload["tasks"]])

    # -- overrides --------------------------------------------------------------
    @staticmethod
    def _in_force(c, student_pks) -> dict[int, dict[str, dict]]:
        """The overrides in force, by student row and task: each task's latest row, unless it is an undo."""
        latest: dict[int, dict[str, dict]] = {}
        q = sa.select(overrides).where(overrides.c.student.in_(list(student_pks))).order_by(overrides.c.id)
        for row in c.execute(q).mappings():
            latest.setdefault(row["student"], {})[row["task_id"]] = dict(row)
        return {pk: {tid: row for tid, row in tasks.items() if row["action"] == "set"}
                for pk, tasks in latest.items()}

    @staticmethod
    def _bands(c, assignment_id: str) -> list | None:
        row = c.execute(sa.select(assignments.c.grade_bands).where(assignments.c.id == assignment_id)).first()
        return json.loads(row[0]) if row and row[0] else None

    @staticmethod
    def _task_version(c, pk: int, task_id: str, graded_at: str, below: int | None = None) -> tuple[str, dict | None]:
        """A task's version (its latest override row and the result's grading time) and that latest row."""
        q = sa.select(overrides).where(overrides.c.student == pk, overrides.c.task_id == task_id)
        if below is not None:
            q = q.where(overrides.c.id < below)
        row = c.execute(q.order_by(overrides.c.id.desc()).limit(1)).mappings().first()
        return f"{row['id'] if row else 0}@{graded_at}", (dict(row) if row else None)

    def task_version(self, assignment_id: str, student_id: str, task_id: str) -> str | None:
        """What a task stands on now, for ``override(expected=...)``: it changes with every override, undo and
        re-grade of the task (None when the student has no result)."""
        with self._errors("read"), self.engine.connect() as c:
            pk = self._student_pk(c, assignment_id, student_id, create=False)
            graded = None if pk is None else c.execute(
                sa.select(results.c.graded_at).where(results.c.student == pk)).scalar()
            return None if graded is None else self._task_version(c, pk, task_id, graded)[0]

    def override(self, assignment_id: str, student_id: str, task_id: str, points: float | None, *, reason: str,
                 by: str, expected: str | None = None) -> dict:
        """Set a task's score by hand (``points``), or undo the override in force (``points`` None), with the
        reason and who did it; the student's stored result changes in the same transaction.  Returns the
        task as it now stands (its JSON, ``override`` included while one is in force).  ``expected``: the
        ``task_version`` the decision was made on; when the task has changed since, ``ChangedSince`` (decided
        inside the transaction, after its row is written: the database orders concurrent writers)."""
        reason = " ".join(str(reason or "").split())  # optional for an undo: its row is kept either way
        if not reason and points is not None:
            raise GradebookError("an override needs a reason (--reason TEXT): the gradebook keeps it.")
        with self._errors(f"override {student_id} {task_id} in"), self.engine.begin() as c:
            pk = self._student_pk(c, assignment_id, student_id, create=False)
            if pk is not None:  # PostgreSQL: one override of a student at a time (SQLite: its write lock)
                c.execute(sa.select(students.c.id).where(students.c.id == pk).with_for_update())
            row = None if pk is None else c.execute(
                sa.select(results.c.result, results.c.submission, results.c.run, results.c.score_key,
                          results.c.graded_at).where(results.c.student == pk)).first()
            if row is None:
                raise GradebookError(f"the gradebook has no result for a student {student_id!r} in {assignment_id}.")
            payload = json.loads(row.result)
            task = next((t for t in payload["tasks"] if t["id"] == task_id), None)
            if task is None:
                raise GradebookError(f"{assignment_id} has no task {task_id!r} (its tasks: "
                                     f"{', '.join(t['id'] for t in payload['tasks'])}).")
            automatic = task.get("override", {}).get("automatic") or task
            if points is None:
                if "override" not in task:
                    raise GradebookError(f"{student_id}'s task {task_id} has no override to undo.")
            elif not (0 <= points <= task["max_score"]):
                raise GradebookError(f"task {task_id} is worth 0 to {task['max_score']:g} points, not {points:g}.")
            c.execute(overrides.insert().values(
                student=pk, task_id=task_id, action="undo" if points is None else "set", points=points,
                replaced_score=automatic["score"], replaced_status=automatic["status"], reason=reason,
                by=str(by)[:128], at=now()))
            if expected is not None:
                mine = c.execute(sa.select(sa.func.max(overrides.c.id)).where(overrides.c.student == pk)).scalar()
                version, before = self._task_version(c, pk, task_id, row.graded_at, below=mine)
                if version != expected:
                    same_row = version.split("@")[0] == str(expected).split("@")[0]
                    raise ChangedSince(task_id, None if same_row else before)
            apply_overrides(payload, self._in_force(c, [pk]).get(pk, {}), self._bands(c, assignment_id))
            self._write_result(c, pk, payload, submission=row.submission, run=row.run, score_key=row.score_key,
                               graded_at=row.graded_at)
        return next(t for t in payload["tasks"] if t["id"] == task_id)

    #: an override row as it travels outside the gradebook (``override_log``, ``append_overrides``)
    LOGGED = ("student", "task", "action", "points", "replaced_score", "replaced_status", "reason", "by", "at")

    def override_log(self, assignment_id: str) -> list[dict]:
        """Every override and undo of the assignment, oldest first (the audit trail), as ``LOGGED`` dicts."""
        q = (sa.select(students.c.student_id.label("student"), overrides.c.task_id.label("task"), overrides.c.action,
                       overrides.c.points, overrides.c.replaced_score, overrides.c.replaced_status,
                       overrides.c.reason, overrides.c.by, overrides.c.at)
             .join(students, overrides.c.student == students.c.id)
             .where(students.c.assignment_id == assignment_id).order_by(overrides.c.id))
        with self._errors("read"), self.engine.connect() as c:
            return [dict(row) for row in c.execute(q).mappings()]

    def append_overrides(self, assignment_id: str, rows: list[dict]) -> None:
        """Add ``rows`` (``LOGGED`` dicts, oldest first, kept as they were: who, when, what they replaced) after
        the audit trail, in one transaction, and put the overrides then in force over the students' results."""
        with self._errors("put overrides back into"), self.engine.begin() as c:
            touched = []
            for row in rows:
                pk = self._student_pk(c, assignment_id, row["student"], create=True)
                c.execute(overrides.insert().values(
                    student=pk, task_id=row["task"], action=row["action"], points=row["points"],
                    replaced_score=row["replaced_score"], replaced_status=row["replaced_status"],
                    reason=row["reason"], by=str(row["by"])[:128], at=row["at"]))
                touched.append(pk)
            in_force, bands = self._in_force(c, touched), self._bands(c, assignment_id)
            for pk in dict.fromkeys(touched):
                row = c.execute(sa.select(results.c.result, results.c.submission, results.c.run, results.c.score_key,
                                          results.c.graded_at).where(results.c.student == pk)).first()
                if row is not None:  # a student not graded yet gets the overrides when graded
                    payload = apply_overrides(json.loads(row.result), in_force.get(pk, {}), bands)
                    self._write_result(c, pk, payload, submission=row.submission, run=row.run,
                                       score_key=row.score_key, graded_at=row.graded_at)

    # -- what shows identical work ------------------------------------------------
    def identities(self, assignment_id: str) -> dict[str, dict | None]:
        """Each student's current submission's fingerprints (None when recorded before schema 2)."""
        with self._errors("read"), self.engine.connect() as c:
            q = (sa.select(students.c.student_id, submissions.c.identity)
                 .join(results, results.c.student == students.c.id)
                 .join(submissions, results.c.submission == submissions.c.id)
                 .where(students.c.assignment_id == assignment_id))
            return {sid: json.loads(identity) if identity else None for sid, identity in c.execute(q)}

    def set_identity(self, assignment_id: str, student_id: str, identity: dict) -> None:
        """Store the fingerprints of the student's current submission (one graded before they were kept)."""
        with self._errors(f"record {student_id} in"), self.engine.begin() as c:
            pk = self._student_pk(c, assignment_id, student_id, create=False)
            sub = sa.select(results.c.submission).where(results.c.student == pk).scalar_subquery()
            c.execute(submissions.update().where(submissions.c.id == sub).values(
                identity=json.dumps(identity, sort_keys=True)))

    # -- reading back -------------------------------------------------------------
    def results(self, assignment_id: str, student_ids=None) -> list[dict]:
        """Current results (StudentResult JSON, with the overrides in force) of an assignment, by student id."""
        with self._errors("read"), self.engine.connect() as c:
            q = (sa.select(students.c.id, results.c.result).join(students, results.c.student == students.c.id)
                 .where(students.c.assignment_id == assignment_id).order_by(students.c.student_id))
            if student_ids is not None:
                q = q.where(students.c.student_id.in_(list(student_ids)))
            rows = c.execute(q).all()
            in_force = self._in_force(c, [pk for pk, _ in rows]) if rows else {}
            bands = self._bands(c, assignment_id)
        return [apply_overrides(json.loads(payload), in_force.get(pk, {}), bands) for pk, payload in rows]

    def current_measurements(self, assignment_id: str, student_id: str):
        """The measurements the student's current result was scored from."""
        with self._errors("read"), self.engine.connect() as c:
            q = (sa.select(submissions.c.measurements)
                 .join(results, results.c.submission == submissions.c.id)
                 .join(students, results.c.student == students.c.id)
                 .where(students.c.assignment_id == assignment_id, students.c.student_id == student_id))
            row = c.execute(q).first()
        return codec.decode(row[0]) if row else None

    def tasks(self, assignment_id: str) -> list[dict]:
        """The assignment's tasks as last graded: [{id, title, points, optional}]."""
        with self._errors("read"), self.engine.connect() as c:
            row = c.execute(sa.select(assignments.c.tasks).where(assignments.c.id == assignment_id)).first()
        return json.loads(row[0]) if row else []

    def spec_folder(self, assignment_id: str) -> str | None:
        """The assignment folder the assignment was last graded from (None before schema 2)."""
        with self._errors("read"), self.engine.connect() as c:
            row = c.execute(sa.select(assignments.c.spec_folder).where(assignments.c.id == assignment_id)).first()
        return row[0] if row else None

    def assignment_ids(self) -> list[str]:
        with self._errors("read"), self.engine.connect() as c:
            return [r[0] for r in c.execute(sa.select(assignments.c.id).order_by(assignments.c.id))]

    def check(self) -> list[str]:
        """Consistency problems (empty when sound): SQLite's integrity check and the foreign keys."""
        problems = []
        with self._errors("check"), self.engine.connect() as c:
            if self.engine.dialect.name == "sqlite":
                problems += [r[0] for r in c.exec_driver_sql("PRAGMA integrity_check") if r[0] != "ok"]
                problems += [str(tuple(r)) for r in c.exec_driver_sql("PRAGMA foreign_key_check")]
            orphans = c.execute(sa.select(sa.func.count()).select_from(results).outerjoin(
                task_results, task_results.c.result == results.c.id).where(task_results.c.id.is_(None))).scalar()
            if orphans:
                problems.append(f"{orphans} result(s) without task rows")
        return problems


def _with_driver(url: str) -> sa.engine.URL:
    """The URL to connect with: a bare ``postgresql://`` uses psycopg (3), the driver ``grader[postgres]``
    installs, whatever SQLAlchemy's own default for the dialect is."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as e:
        raise GradebookError(f"cannot use the gradebook URL {url!r}: {e}") from None
    return parsed.set(drivername="postgresql+psycopg") if parsed.drivername == "postgresql" else parsed


def _migrate(c, version: int) -> None:
    """Upgrade a gradebook of schema ``version`` in place (in the caller's transaction): add the columns later
    versions added (new tables are already there), then record the new version.  Nothing is rewritten."""
    inspector = sa.inspect(c)
    present = {(t, col["name"]) for t in inspector.get_table_names() for col in inspector.get_columns(t)}
    for added in range(version + 1, SCHEMA_VERSION + 1):
        for table, name in ADDED_COLUMNS.get(added, []):
            if (table.name, name) not in present:
                kind = table.c[name].type.compile(dialect=c.dialect)
                c.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN {name} {kind}'))
    c.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))


def _no_nul(text: str | None) -> str | None:
    """Text a PostgreSQL text column takes (it refuses NUL characters; no database takes a lone surrogate, which a
    file name's undecodable bytes bring), the same in every database."""
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text.replace("\x00", "\\x00")) if text \
        else text


def _make_private(database: str | None) -> None:
    """Before SQLite opens the gradebook file: create it owner-only (mode 0600; SQLite gives its journal
    the same mode), or make an existing one owner-only.  A folder that does not exist or may not be
    written, or a file another user owns, is left for SQLite to open or to report in its own words."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return  # in memory, or a URI filename SQLite resolves itself
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
        return
    except FileExistsError:
        pass
    except OSError:
        return
    # an existing file is never opened here: closing a descriptor of a database file would release the
    # POSIX locks another connection of this process holds on it
    with suppress(OSError):
        if os.stat(database).st_mode & 0o077:
            os.chmod(database, PRIVATE_FILE)


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=FULL")  # a committed student survives a power cut, not just a kill
    cur.close()
