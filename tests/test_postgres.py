"""The gradebook on a real PostgreSQL server (`--db postgresql://...`): a batch killed with SIGKILL halfway and
resumed, an override, a review and the exports, compared row for row and file for file with SQLite.

The server is a throw-away one: initdb and pg_ctl from Debian's packages (``.ci/run`` installs them) in a
temporary folder, run as an unprivileged user (the ``postgres`` system user when the tests run as root),
listening on a unix socket in that folder only."""
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import TUTORIAL6
from test_batch import DEMO, grader, start_grader


def _server_binaries() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


BIN = _server_binaries()
pytestmark = pytest.mark.skipif(BIN is None, reason="PostgreSQL's server is not installed (no /usr/lib/postgresql/"
                                                    "*/bin/initdb); `apt-get install postgresql` (.ci/run does)")


class Server:
    """A running throw-away PostgreSQL server: its socket folder, and its databases by name."""

    def __init__(self, folder: Path):
        self.folder = folder

    def connect(self, database: str = "postgres", **kw):
        import psycopg

        return psycopg.connect(host=str(self.folder), user="grader", dbname=database, **kw)

    def new_database(self, name: str) -> str:
        """Create the database ``name``; returns its URL for ``--db``."""
        with self.connect(autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://grader@/{name}?host={self.folder}"

    def results(self, name: str) -> int:
        """How many students the gradebook in database ``name`` holds a result for (0 before it has tables)."""
        import psycopg

        try:
            with self.connect(name) as c:
                return c.execute("select count(*) from results").fetchone()[0]
        except psycopg.errors.UndefinedTable:  # the schema is still being created
            return 0


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server for this module, on a unix socket in a temporary folder only."""
    folder = Path(tempfile.mkdtemp(prefix="grader-pg-"))  # short: a socket path has at most 107 bytes
    run_as = []
    if os.geteuid() == 0:  # the server refuses to run as root
        user = next((u for u in ("postgres", "nobody") if _exists(u)), None)
        assert user, "no unprivileged user to run PostgreSQL as"
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        run_as = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
    data = folder / "data"
    env = dict(os.environ, LC_ALL="C")
    subprocess.run(run_as + [BIN / "initdb", "-D", data, "-U", "grader", "--auth=trust", "--encoding=UTF8",
                             "--locale=C", "--no-sync"], check=True, capture_output=True, env=env, cwd=folder)
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"listen_addresses = ''\nunix_socket_directories = '{folder}'\nfsync = off\n")
    subprocess.run(run_as + [BIN / "pg_ctl", "-D", data, "-l", folder / "server.log", "-w", "-t", "120", "start"],
                   check=True, capture_output=True, env=env, cwd=folder)
    try:
        yield Server(folder)
    finally:
        subprocess.run(run_as + [BIN / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True,
                       env=env, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def rows(url: str) -> dict:
    """Everything a gradebook holds that does not depend on when it was written, in a stable order, read
    the same way from SQLite and from PostgreSQL."""
    import sqlalchemy as sa

    from grader.store.gradebook import Gradebook

    queries = {
        "results": """select s.student_id, r.score, r.max_score, r.outcome, r.score_key, r.result from results r
                      join students s on s.id = r.student order by s.student_id""",
        "task_results": """select s.student_id, t.task_id, t.score, t.max_score, t.status, t.metrics, t.message,
                           t.source from task_results t join results r on r.id = t.result
                           join students s on s.id = r.student order by s.student_id, t.task_id""",
        "submissions": """select s.student_id, b.content_hash, b.measure_key, b.files, b.identity from submissions b
                          join students s on s.id = b.student order by s.student_id, b.measure_key""",
        "overrides": """select s.student_id, o.task_id, o.action, o.points, o.replaced_score, o.replaced_status,
                        o.reason, o."by" from overrides o join students s on s.id = o.student order by o.id""",
        "assignments": "select id, title, max_score, tasks, grade_bands from assignments order by id",
    }
    gradebook = Gradebook(url)
    try:
        with gradebook.engine.connect() as c:
            out = {name: [tuple(r) for r in c.execute(sa.text(q))] for name, q in queries.items()}
            out["runs"] = [(status, json.loads(counts or "{}")) for status, counts in
                           c.execute(sa.text("select status, counts from runs order by id"))]
        out["problems"] = gradebook.check()
    finally:
        gradebook.close()
    return out


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_postgresql_gradebook_survives_sigkill_and_matches_sqlite_row_for_row(postgres, tmp_path):
    klass = tmp_path / "class"
    for i, who in enumerate(["bob", "carol", "dave", "alice", "bob", "carol"]):
        shutil.copytree(DEMO / who, klass / f"s{i}_{who}")
    lite = tmp_path / "sqlite"
    proc = grader("grade", klass, "-a", TUTORIAL6, "-o", lite, "--workers", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]

    url = postgres.new_database("grades")
    out = tmp_path / "postgresql"
    batch = start_grader("grade", klass, "-a", TUTORIAL6, "-o", out, "--workers", 2, "--db", url)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and batch.poll() is None and postgres.results("grades") < 2:
        time.sleep(0.2)
    assert batch.poll() is None, "the batch ended before it could be killed: " + batch.stderr.read()[-2000:]
    os.killpg(batch.pid, signal.SIGKILL)  # the grader, its worker pool and their Keras workers
    batch.wait()
    before = postgres.results("grades")
    assert 2 <= before < 6

    again = grader("grade", klass, "-a", TUTORIAL6, "-o", out, "--workers", 2, "--db", url)
    assert again.returncode == 0, again.stderr[-3000:]
    pg, sqlite = rows(url), rows(f"sqlite:///{lite / 'gradebook.sqlite'}")
    assert [status for status, _ in pg["runs"]] == ["interrupted", "finished"]
    assert pg["runs"][-1][1]["cached"] == before and pg["runs"][-1][1]["measured"] == 6 - before
    assert pg["problems"] == [] and sqlite["problems"] == []
    assert len(pg["task_results"]) == 6 * 11
    for table in ("results", "task_results", "submissions", "assignments"):
        assert pg[table] == sqlite[table], table  # scores, statuses, metrics, messages, file hashes, fingerprints
    assert json.loads((out / "results.json").read_text())["students"] == \
        json.loads((lite / "results.json").read_text())["students"]

    # the exports, the review and an override read and write PostgreSQL as they do SQLite
    for where, db in ((out, ["--db", url]), (lite, [])):
        proc = grader("export", "-o", where, *db, "--to", where / "export")
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert _files(out / "export") == _files(lite / "export")
    reviews = [grader("review", "-o", where, *db, "--json") for where, db in ((out, ["--db", url]), (lite, []))]
    assert reviews[0].returncode == 0 and json.loads(reviews[0].stdout) == json.loads(reviews[1].stdout)
    assert any({"s0_bob", "s4_bob"} <= set(g["students"]) for g in json.loads(reviews[0].stdout)["identical"])
    for where, db in ((out, ["--db", url]), (lite, [])):
        proc = grader("override", "s0_bob", "1c", 7.5, "--reason", "checked by hand", "--by", "ta", "-o", where, *db)
        assert proc.returncode == 0 and "Re-drew" in proc.stderr, proc.stderr[-3000:]
    pg, sqlite = rows(url), rows(f"sqlite:///{lite / 'gradebook.sqlite'}")
    assert pg["overrides"] == sqlite["overrides"] == [("s0_bob", "1c", "set", 7.5, 0.0, "failed", "checked by hand",
                                                       "ta")]
    assert [r[:5] for r in pg["results"]] == [r[:5] for r in sqlite["results"]]
