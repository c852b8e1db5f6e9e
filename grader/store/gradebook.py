"""The gradebook: a real database of assignments, students, submissions, runs and results.

SQLite in the output folder by default; any SQLAlchemy URL (PostgreSQL, as
nbgrader allows) with ``--db``.  Each student's result is written in one
transaction together with the measurements it came from, so a batch killed
at any moment (SIGKILL included) leaves every finished student complete and
no half-written one; the next run picks up where it stopped.

Tables: ``assignments``; ``students`` (one row per student and assignment);
``submissions`` (the content hash of a student's files, the measure key and
the stored measurements, one row per distinct submission); ``runs`` (one per
``grader grade``); ``results`` (a student's current result: one row per
student, replaced on re-grading); ``task_results`` (its tasks, for queries
and exports).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from .. import __version__
from ..errors import GradebookError
from . import codec

SCHEMA_VERSION = 1
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


@dataclass
class Stored:
    """What the gradebook knows of one student."""

    score_key: str | None
    measure_keys: set[str]


class Gradebook:
    def __init__(self, url: str | None = None, out_dir: Path | None = None):
        if url is None:
            if out_dir is None:
                raise ValueError("a gradebook needs a URL or an output folder")
            path = Path(out_dir) / DEFAULT_NAME
            url = f"sqlite:///{path}"
            self.where = str(path)
        else:
            self.where = sa.engine.make_url(url).render_as_string(hide_password=True)
        try:
            self.engine = sa.create_engine(url)
        except (sa.exc.ArgumentError, ImportError) as e:
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
    def begin_run(self, assignment, engine: str) -> int:
        tasks = json.dumps([{"id": t.id, "title": t.title, "points": t.points, "optional": t.optional}
                            for t in assignment.tasks])
        with self._errors("start a run in"), self.engine.begin() as c:
            row = dict(id=assignment.id, title=assignment.title, max_score=assignment.max_score, tasks=tasks)
            if c.execute(sa.select(assignments.c.id).where(assignments.c.id == assignment.id)).first():
                c.execute(assignments.update().where(assignments.c.id == assignment.id).values(**row))
            else:
                c.execute(assignments.insert().values(**row))
            # only one grader holds the output folder, so a run still 'running' was killed
            c.execute(runs.update().where(runs.c.status == "running").values(status="interrupted"))
            return c.execute(runs.insert().values(assignment_id=assignment.id, started_at=now(), status="running",
                                                  grader_version=__version__, engine=engine)).inserted_primary_key[0]

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
               measure_key: str, score_key: str, measurements: dict | None, result) -> None:
        """Store one student's measurements and result in one transaction (all or nothing)."""
        blob = codec.encode(measurements) if measurements is not None else None
        payload = result.to_json()
        with self._errors(f"record {student_id} in"), self.engine.begin() as c:
            pk = self._student_pk(c, assignment_id, student_id, create=True)
            sub = c.execute(sa.select(submissions.c.id).where(submissions.c.student == pk,
                                                              submissions.c.measure_key == measure_key)).first()
            if sub is None:
                if blob is None:
                    raise GradebookError(f"no stored measurements for {student_id}; grade again with --force")
                sub_id = c.execute(submissions.insert().values(
                    student=pk, content_hash=content_hash, measure_key=measure_key, files=json.dumps(files),
                    measurements=blob, measured_at=now())).inserted_primary_key[0]
            else:
                sub_id = sub[0]
                if blob is not None:
                    c.execute(submissions.update().where(submissions.c.id == sub_id).values(
                        measurements=blob, measured_at=now(), files=json.dumps(files)))
            old = c.execute(sa.select(results.c.id).where(results.c.student == pk)).first()
            if old is not None:
                c.execute(task_results.delete().where(task_results.c.result == old[0]))
                c.execute(results.delete().where(results.c.id == old[0]))
            rid = c.execute(results.insert().values(
                student=pk, submission=sub_id, run=run_id, score_key=score_key, score=result.score,
                max_score=result.max_score, outcome=result.outcome, result=json.dumps(payload, ensure_ascii=False),
                graded_at=now())).inserted_primary_key[0]
            c.execute(task_results.insert(), [
                dict(result=rid, task_id=t["id"], score=t["score"], max_score=t["max_score"], status=t["status"],
                     metrics=json.dumps(t["metrics"]), message=t["message"], source=t.get("source"))
                for t in payload["tasks"]])

    # -- reading back -------------------------------------------------------------
    def results(self, assignment_id: str, student_ids=None) -> list[dict]:
        """Current results (StudentResult JSON) of an assignment, by student id."""
        with self._errors("read"), self.engine.connect() as c:
            q = (sa.select(results.c.result).join(students, results.c.student == students.c.id)
                 .where(students.c.assignment_id == assignment_id).order_by(students.c.student_id))
            if student_ids is not None:
                q = q.where(students.c.student_id.in_(list(student_ids)))
            return [json.loads(r[0]) for r in c.execute(q)]

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
