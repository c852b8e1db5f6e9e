"""Batches that survive: the gradebook, resume after SIGKILL, the cache, re-scoring, parallel workers,
a Dask cluster, one grader per output folder, a full or read-only disk, exports and re-rendering."""
import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TUTORIAL6

GRADER = [sys.executable, "-m", "grader.cli"]
SECRET = "batch-test-secret"
DEMO = ROOT / "submissions" / "tutorial6"
N_TASKS = 11


def grader(*args, secret=SECRET, **kw):
    env = dict(os.environ, GRADER_SECRET=secret)
    return subprocess.run(GRADER + [str(a) for a in args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=900, **kw)


def start_grader(*args, secret=SECRET):
    env = dict(os.environ, GRADER_SECRET=secret)
    return subprocess.Popen(GRADER + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT, start_new_session=True)


@pytest.fixture(scope="module")
def klass(tmp_path_factory):
    """A class of ten students made of the demo's submissions (good, weak, broken, swapped)."""
    root = tmp_path_factory.mktemp("class")
    plan = ["bob", "carol", "dave", "bob", "carol", "dave", "alice", "bob", "dave", "carol"]
    for i, who in enumerate(plan):
        shutil.copytree(DEMO / who, root / f"s{i:02d}_{who}")
    return root


def gradebook_rows(out: Path):
    """Every student's score and every task's score, status, metrics and message, as stored."""
    c = sqlite3.connect(f"file:{out / 'gradebook.sqlite'}?mode=ro", uri=True)
    try:
        rows = c.execute("""select s.student_id, r.score, t.task_id, t.score, t.status, t.metrics, t.message
                            from results r join students s on s.id = r.student
                            join task_results t on t.result = r.id order by 1, 3""").fetchall()
        counts = {t: c.execute(f"select count(*) from {t}").fetchone()[0]
                  for t in ("students", "submissions", "results", "task_results")}
        runs = [dict(zip(("status", "counts"), r)) for r in c.execute("select status, counts from runs order by id")]
    finally:
        c.close()
    return rows, counts, runs


@pytest.fixture(scope="module")
def uninterrupted(klass, tmp_path_factory):
    out = tmp_path_factory.mktemp("out-uninterrupted")
    proc = grader("grade", klass, "-a", TUTORIAL6, "-o", out, "--workers", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_sigkill_halfway_then_restart_gives_the_same_gradebook(klass, uninterrupted, tmp_path):
    out = tmp_path / "out"
    proc = start_grader("grade", klass, "-a", TUTORIAL6, "-o", out, "--workers", 2)
    db = out / "gradebook.sqlite"
    committed = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                committed = gradebook_rows(out)[1]["results"]
            except sqlite3.OperationalError:  # the schema is still being created
                committed = 0
            if committed >= 3:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the batch ended before it could be killed: " + proc.stderr.read()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the grader, its worker pool and their Keras workers
    proc.wait()
    before = gradebook_rows(out)[1]["results"]
    assert 3 <= before < 10

    again = grader("grade", klass, "-a", TUTORIAL6, "-o", out, "--workers", 2)
    assert again.returncode == 0, again.stderr[-3000:]
    rows, counts, runs = gradebook_rows(out)
    expected, _, _ = gradebook_rows(uninterrupted)
    assert rows == expected  # scores, statuses, metrics and messages, task by task
    assert counts == {"students": 10, "submissions": 10, "results": 10, "task_results": 10 * N_TASKS}
    assert [r["status"] for r in runs] == ["interrupted", "finished"]
    done = json.loads(runs[-1]["counts"])
    assert done["cached"] == before and done["measured"] == 10 - before  # nothing graded twice
    results = json.loads((out / "results.json").read_text())
    assert [s["id"] for s in results["students"]] == sorted(p.name for p in klass.iterdir())


def test_an_unchanged_batch_is_not_graded_again(klass, uninterrupted):
    before = (uninterrupted / "results.json").read_text()
    proc = grader("grade", klass, "-a", TUTORIAL6, "-o", uninterrupted)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 run, 0 re-scored, 10 unchanged" in proc.stderr
    _, counts, runs = gradebook_rows(uninterrupted)
    assert json.loads(runs[-1]["counts"])["cached"] == 10 and counts["results"] == 10
    assert json.loads((uninterrupted / "results.json").read_text())["students"] == \
        json.loads(before)["students"]
    # one changed file: only that student is run again
    changed = klass / "s03_bob" / "1a.h5"
    saved = changed.read_bytes()
    try:
        shutil.copy(klass / "s06_alice" / "1e.h5", changed)
        proc = grader("grade", klass, "-a", TUTORIAL6, "-o", uninterrupted)
        assert "1 run, 0 re-scored, 9 unchanged" in proc.stderr, proc.stderr[-2000:]
    finally:
        changed.write_bytes(saved)
    proc = grader("grade", klass, "-a", TUTORIAL6, "-o", uninterrupted, "--force")
    assert "10 run" in proc.stderr


def test_a_changed_threshold_rescores_from_stored_metrics(klass, uninterrupted, tmp_path):
    spec = tmp_path / "tutorial6"
    shutil.copytree(TUTORIAL6, spec)
    out = tmp_path / "out"
    shutil.copytree(uninterrupted, out)
    text = (spec / "calibration.toml").read_text()
    start = text.index('[tasks."2a".accuracy]')
    line = text.index("pass = ", start)
    end = text.index("\n", line)
    spec.joinpath("calibration.toml").write_text(text[:line] + "pass = 0.9999" + text[end:])
    proc = grader("grade", klass, "-a", spec, "-o", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 run, 10 re-scored, 0 unchanged" in proc.stderr
    old = {s["id"]: s for s in json.loads((uninterrupted / "results.json").read_text())["students"]}
    new = {s["id"]: s for s in json.loads((out / "results.json").read_text())["students"]}
    task = lambda s, tid: next(t for t in s["tasks"] if t["id"] == tid)  # noqa: E731
    assert task(old["s06_alice"], "2a")["status"] == "passed"
    assert task(new["s06_alice"], "2a")["status"] == "partial"  # the same accuracy, a stricter threshold
    assert task(new["s06_alice"], "2a")["metrics"] == task(old["s06_alice"], "2a")["metrics"]


def test_a_second_grader_on_the_same_output_is_refused(klass, tmp_path):
    out = tmp_path / "out"
    first = start_grader("grade", klass, "-a", TUTORIAL6, "-o", out, "--workers", 1)
    lock = out / ".grader.lock"
    deadline = time.monotonic() + 600  # a guard against a hang only: the first grader's start is not timed
    while time.monotonic() < deadline and first.poll() is None and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.1)
    assert first.poll() is None, "the first grader ended before it held its lock: " + first.stderr.read()[-2000:]
    # stopped while it holds its lock, so that it is still running when the second asks, however quickly it
    # would grade (the second's start took a fifth of the first's batch: a busy moment could reverse them)
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        second = grader("grade", klass, "-a", TUTORIAL6, "-o", out)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert second.returncode == 2
    assert "another grader (pid" in second.stderr and str(out) in second.stderr
    assert first.wait(600) == 0, first.stderr.read()[-2000:]
    rows, counts, runs = gradebook_rows(out)
    assert counts["results"] == 10 and [r["status"] for r in runs] == ["finished"]


def _in_mount_namespace(script: str, **env) -> subprocess.CompletedProcess:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount a small or read-only file system")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("mount namespaces are not available here")
    e = dict(os.environ, GRADER_SECRET=SECRET, PY=sys.executable, **{k: str(v) for k, v in env.items()})
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, env=e, cwd=ROOT, timeout=900)


def test_a_full_disk_stops_with_a_clear_error_and_a_consistent_gradebook(klass, tmp_path):
    out, saved = tmp_path / "out", tmp_path / "saved"
    out.mkdir()
    saved.mkdir()
    proc = _in_mount_namespace(
        'mount -t tmpfs -o size=600k tmpfs "$OUT" || exit 99; '
        '"$PY" -m grader.cli grade "$CLASS" -a "$SPEC" -o "$OUT" --workers 1; rc=$?; '
        'cp "$OUT"/gradebook.sqlite* "$SAVED"/; exit $rc', OUT=out, SAVED=saved, CLASS=klass, SPEC=TUTORIAL6)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "disk is full" in proc.stderr or "No space left on device" in proc.stderr
    rows, counts, _ = gradebook_rows(saved)
    assert 1 <= counts["results"] < 10, counts  # what finished is kept, the rest is not half-written
    assert counts["task_results"] == counts["results"] * N_TASKS
    from grader.store import Gradebook

    assert Gradebook(None, saved).check() == []


def test_a_read_only_output_folder_is_refused_and_left_as_it_was(klass, uninterrupted, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(uninterrupted, out)
    before = (out / "gradebook.sqlite").read_bytes()
    proc = _in_mount_namespace(
        'mount --bind "$OUT" "$OUT" && mount -o remount,bind,ro "$OUT" || exit 99; '
        'exec "$PY" -m grader.cli grade "$CLASS" -a "$SPEC" -o "$OUT" --force', OUT=out, CLASS=klass,
        SPEC=TUTORIAL6)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Read-only file system" in proc.stderr or "read-only" in proc.stderr
    assert (out / "gradebook.sqlite").read_bytes() == before


def test_dask_cluster_grades_like_local_workers(tmp_path, monkeypatch):
    import dask
    from distributed import LocalCluster

    from grader.pipeline import grade_batch

    small = tmp_path / "class"
    for who in ("bob", "carol", "dave"):
        shutil.copytree(DEMO / who, small / who)
    monkeypatch.setenv("GRADER_SECRET", SECRET)
    local = grade_batch(small, TUTORIAL6, tmp_path / "local", workers=1)
    assert local.counts["measured"] == 3
    with dask.config.set({"distributed.worker.daemon": False}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = grade_batch(small, TUTORIAL6, tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert remote.counts["measured"] == 3
    assert gradebook_rows(tmp_path / "dask")[0] == gradebook_rows(tmp_path / "local")[0]
    _, _, runs = gradebook_rows(tmp_path / "dask")
    assert runs[-1]["status"] == "finished"


def test_exports_validate(uninterrupted, tmp_path):
    from junitparser import Error, Failure, JUnitXml, Skipped

    proc = grader("export", "-o", uninterrupted, "--to", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {s["id"]: s for s in json.loads((uninterrupted / "results.json").read_text())["students"]}

    with open(tmp_path / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["student_id"] for r in rows] == sorted(results)  # one row per student
    for r in rows:
        s = results[r["student_id"]]
        assert float(r["total"]) == s["score"] and float(r["max_score"]) == s["max_score"]
        assert float(r["task_2a"]) == next(t["score"] for t in s["tasks"] if t["id"] == "2a")

    xml = JUnitXml.fromfile(str(tmp_path / "junit.xml"))
    suites = {suite.name: suite for suite in xml}
    assert set(suites) == set(results)
    for sid, suite in suites.items():
        cases = list(suite)
        assert len(cases) == N_TASKS and suite.tests == N_TASKS
        for case, task in zip(cases, results[sid]["tasks"], strict=True):
            kinds = {type(r) for r in case.result}
            if task["status"] == "passed":
                assert not kinds
            elif task["status"] == "error":
                assert kinds == {Error} and case.result[0].text == task["message"]
            elif task["status"] == "missing" and task["optional"]:
                assert kinds == {Skipped}
            else:
                assert kinds == {Failure} and case.result[0].text == task["message"]

    visibility = {"hidden", "after_due_date", "after_published", "visible"}
    for sid, s in results.items():
        gs = json.loads((tmp_path / "gradescope" / sid / "results.json").read_text())
        assert set(gs) <= {"score", "execution_time", "output", "output_format", "test_output_format",
                           "test_name_format", "visibility", "stdout_visibility", "extra_data", "tests",
                           "leaderboard"}
        assert gs["score"] == s["score"] and gs["visibility"] in visibility
        assert len(gs["tests"]) == N_TASKS
        for t in gs["tests"]:
            assert set(t) <= {"score", "max_score", "status", "name", "name_format", "number", "output",
                              "output_format", "tags", "visibility", "extra_data"}
            assert isinstance(t["name"], str) and isinstance(t["score"], float) and t["visibility"] in visibility
            assert t["status"] in ("passed", "failed") and 0 <= t["score"] <= t["max_score"]


def test_reports_rerender_from_the_gradebook_alone(uninterrupted, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(uninterrupted, out)
    shutil.rmtree(out / "students")
    (out / "index.html").unlink()
    (out / "results.json").unlink()
    _, _, runs_before = gradebook_rows(out)
    proc = grader("report", "-a", TUTORIAL6, "-o", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(0 plot(s) drawn" in proc.stderr  # the batch's workers drew them; they were kept
    pages = sorted(p.stem for p in (out / "students").glob("*.html"))
    assert len(pages) == 10
    alice = (out / "students" / "s06_alice.html").read_text()
    assert alice.count("data:image/png;base64,") >= 9  # the plots came back from stored measurements
    index = (out / "index.html").read_text()
    assert "s06_alice" in index and "pass rate" in index.lower()
    assert json.loads((out / "results.json").read_text())["students"] == \
        json.loads((uninterrupted / "results.json").read_text())["students"]
    assert gradebook_rows(out)[2] == runs_before  # nothing was graded
    # no plot kept: every one is drawn again, from the stored measurements, to the same bytes the workers drew
    drawn_by_workers = {p.name: p.read_text() for p in (out / "students").glob("*.html")}
    kept = sorted(p.name for p in (out / ".plots").iterdir())
    shutil.rmtree(out / ".plots")
    proc = grader("report", "-a", TUTORIAL6, "-o", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"({len(kept)} plot(s) drawn, " in proc.stderr
    assert sorted(p.name for p in (out / ".plots").iterdir()) == kept
    assert {p.name: p.read_text() for p in (out / "students").glob("*.html")} == drawn_by_workers


def _grader_copy(folder: Path, edit) -> Path:
    """This grader's code copied into ``folder`` with one change, ``edit(package folder)``: a later version."""
    shutil.copytree(ROOT / "grader", folder / "grader", ignore=shutil.ignore_patterns("__pycache__"))
    edit(folder / "grader")
    return folder


def _grade_with(code: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, GRADER_SECRET=SECRET, PYTHONPATH=str(code))  # ahead of the installed grader
    return subprocess.run([sys.executable, "-m", "grader.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=code, timeout=900)


def _measured(out: Path) -> list:
    c = sqlite3.connect(f"file:{out / 'gradebook.sqlite'}?mode=ro", uri=True)
    try:
        return c.execute("""select s.student_id, m.measure_key, m.measured_at, m.measurements from submissions m
                            join students s on s.id = m.student order by 1, 2""").fetchall()
    finally:
        c.close()


def test_a_report_edit_redraws_pages_and_measures_nothing(klass, uninterrupted, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(uninterrupted, out)
    measured = _measured(out)
    kept = sorted(p.name for p in (out / ".plots").iterdir())
    assert kept

    def template(package):
        page = package / "report" / "templates" / "student.html.j2"
        page.write_text(page.read_text().replace("</body>", "<!-- the edited template -->\n</body>"))

    proc = _grade_with(_grader_copy(tmp_path / "template", template), "grade", klass, "-a", TUTORIAL6, "-o", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 run, 0 re-scored, 10 unchanged" in proc.stderr
    assert all("the edited template" in p.read_text() for p in (out / "students").glob("*.html"))  # every page
    assert _measured(out) == measured  # no model loaded again: the stored measurements are those of the first run
    counts = json.loads(gradebook_rows(out)[2][-1]["counts"])
    assert counts["plots_drawn"] == 0 and counts["plots_reused"] >= len(kept)  # every picture was kept
    assert sorted(p.name for p in (out / ".plots").iterdir()) == kept

    def plotting(package):  # the code that draws the plots: every plot is drawn again, still nothing is measured
        code = package / "report" / "plots.py"
        code.write_text(code.read_text() + "\n# a later version\n")

    proc = _grade_with(_grader_copy(tmp_path / "plots", plotting), "grade", klass, "-a", TUTORIAL6, "-o", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 run, 0 re-scored, 10 unchanged" in proc.stderr
    assert _measured(out) == measured
    assert json.loads(gradebook_rows(out)[2][-1]["counts"])["plots_drawn"] == len(kept)
    redrawn = sorted(p.name for p in (out / ".plots").iterdir())
    assert len(redrawn) == len(kept) and not set(redrawn) & set(kept)  # the old pictures are forgotten
