"""The CLI end to end: exit codes, results.json's contract, the secret, HTML in a real browser."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, TUTORIAL6

GRADER = [sys.executable, "-m", "grader.cli"]
STATUSES = {"passed", "partial", "failed", "missing", "error"}


def run_grader(*args, env=None):
    e = dict(os.environ)
    e.pop("GRADER_SECRET", None)
    e.update(env or {})
    return subprocess.run(GRADER + list(args), capture_output=True, text=True, env=e, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def graded_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    proc = run_grader("grade", str(ROOT / "submissions" / "tutorial6"), "--assignment", str(TUTORIAL6), "--out", str(out))
    return proc, out


def test_demo_batch_exits_0_and_results_json_has_the_contract(graded_demo):
    proc, out = graded_demo
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
    assert data["assignment"] == "tutorial6"
    ids = [s["id"] for s in data["students"]]
    assert ids == sorted(ids) and {"alice", "bob", "carol", "dave", "erin"} <= set(ids)
    for s in data["students"]:
        assert isinstance(s["id"], str) and isinstance(s["score"], float) and isinstance(s["max_score"], float)
        for t in s["tasks"]:
            assert {"id", "score", "max_score", "status", "metrics", "message"} <= set(t)
            assert t["status"] in STATUSES and isinstance(t["message"], str) and t["message"]
            assert isinstance(t["score"], float) and isinstance(t["max_score"], float)
            assert all(isinstance(k, str) and isinstance(v, float) for k, v in t["metrics"].items())
    by_id = {s["id"]: s for s in data["students"]}
    assert by_id["alice"]["score"] == 100.0
    carol_2a = next(t for t in by_id["carol"]["tasks"] if t["id"] == "2a")
    assert carol_2a["status"] == "error" and "truncated" in carol_2a["message"]
    dave_2a = next(t for t in by_id["dave"]["tasks"] if t["id"] == "2a")
    assert "swapped" in dave_2a["message"]
    bob_1c = next(t for t in by_id["bob"]["tasks"] if t["id"] == "1c")
    assert bob_1c["status"] == "failed" and "Dense(150, relu)" in bob_1c["message"]
    # the path most students take: a notebook, a plain script, a Keras 2 notebook
    for sid, tasks in (("frank", ("1a", "1b", "2a", "2c", "3")), ("grace", ("1b", "2a", "2b")),
                       ("heidi", ("1a", "2a"))):
        found = {t["id"]: t for t in by_id[sid]["tasks"]}
        missing = [tid for tid in tasks if found[tid]["status"] == "missing"]
        assert not missing, (sid, missing, [found[t]["message"] for t in missing], by_id[sid]["notebooks"])
        assert by_id[sid]["notebooks"] and by_id[sid]["notebooks"][0]["sandboxed"]
        # the models its run made are marked as the grader's captures (the work view names their cells)
        assert any(f["captured"] and ", cell " in f["name"] for f in by_id[sid]["files"]), by_id[sid]["files"]
    assert not any(f["captured"] for f in by_id["bob"]["files"])  # bob hands in files only
    # heidi's Adam(lr=...) is Keras 2: her notebook ran on Keras 2, every task it trains earned its marks, and
    # the report names the line to change for current Keras
    heidi = by_id["heidi"]
    assert heidi["notebooks"][0]["keras"] == "2" and not heidi["notebooks"][0]["failures"]
    assert all(t["status"] == "passed" for t in heidi["tasks"] if t["id"] in ("1a", "2a")), heidi["tasks"]
    assert any("ran on Keras 2" in n and "Adam(learning_rate=0.01)" in n for n in heidi["notes"]), heidi["notes"]
    page = (out / "students" / "heidi.html").read_text()
    assert "ran on Keras 2 (tf_keras 2." in page and "Adam(learning_rate=0.01)" in page


def test_the_demos_review_puts_carols_unreadable_file_first_and_lists_no_clear_inference(graded_demo):
    _, out = graded_demo
    proc = run_grader("review", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    items = json.loads(proc.stdout)["items"]
    assert (items[0]["rank"], items[0]["kind"], items[0]["students"], items[0]["task"]) == \
        (1, "could not be graded", ["carol"], "2a")
    # every notebook student's tasks are inferred, each clearly (the runner-up far behind): none is listed
    assert not [i for i in items if i["kind"] == "inferred task"], items
    # HDF5's own words about carol's file are for the TA's log; her page and the class page say it plainly
    carol = (out / "students" / "carol.html").read_text()
    assert "truncated or not an HDF5 Keras file" in carol
    for page in (carol, (out / "index.html").read_text(), items[0]["detail"]):
        assert "sblock" not in page and "stored_eof" not in page
    assert "sblock" in (out / "grader.log").read_text()


def test_secret_is_created_in_out_once_and_reused(graded_demo, tmp_path):
    proc, out = graded_demo
    secret = out / ".grader-secret"
    assert secret.is_file() and oct(secret.stat().st_mode & 0o777) == "0o600"
    assert "Created a grading secret" in proc.stderr
    assert not list((ROOT / "submissions").rglob(".grader-secret"))
    value = secret.read_text()
    assert value.strip() not in (out / "results.json").read_text()
    assert value.strip() not in (out / "index.html").read_text()


def test_a_secret_decides_the_heldout_data(tmp_path):
    subs = tmp_path / "subs"
    shutil.copytree(ROOT / "submissions" / "tutorial6" / "alice", subs / "alice")
    metrics = []
    for secret in ("one", "one", "two"):
        out = tmp_path / f"out-{len(metrics)}"
        assert run_grader("grade", str(subs), "-a", str(TUTORIAL6), "-o", str(out),
                          env={"GRADER_SECRET": secret}).returncode == 0
        assert not (out / ".grader-secret").exists()
        data = json.loads((out / "results.json").read_text())
        metrics.append([t["metrics"] for t in data["students"][0]["tasks"]])
    assert metrics[0] == metrics[1] and metrics[0] != metrics[2]


def test_the_grader_itself_failing_exits_nonzero(tmp_path):
    proc = run_grader("grade", str(tmp_path / "missing"), "-a", str(TUTORIAL6), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    (tmp_path / "subs").mkdir()
    proc = run_grader("grade", str(tmp_path / "subs"), "-a", str(tmp_path), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "assignment.toml" in proc.stderr
    proc = run_grader("grade", str(tmp_path / "subs"), "-a", str(TUTORIAL6), "-o", str(tmp_path / "subs" / "r"))
    assert proc.returncode == 2 and "inside the submissions folder" in proc.stderr


def test_notebooks_are_executed_and_reported(tmp_path):
    import nbformat

    subs = tmp_path / "subs" / "nb"
    subs.mkdir(parents=True)
    cells = [nbformat.v4.new_code_cell("print(1)"), nbformat.v4.new_code_cell("1 / 0")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), subs / "work.ipynb")
    (subs / "broken.ipynb").write_text('{"cells": [], "nbformat": 4')
    out = tmp_path / "out"
    assert run_grader("grade", str(tmp_path / "subs"), "-a", str(TUTORIAL6), "-o", str(out)).returncode == 0
    student = json.loads((out / "results.json").read_text())["students"][0]
    files = {f["name"]: f for f in student["files"]}
    assert files["work.ipynb"]["outcome"] == "executed" and "1 failed" in files["work.ipynb"]["message"]
    assert files["broken.ipynb"]["outcome"] == "error"
    assert student["notebooks"][0]["failures"][0]["error"] == "ZeroDivisionError"
    html = (out / "students" / "nb.html").read_text()
    assert "Notebook work.ipynb" in html and "ZeroDivisionError" in html


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on this machine (.ci/run installs it)")


def _browser(*args, tmp_path):
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_student_page_renders_in_a_real_browser(graded_demo, tmp_path):
    _, out = graded_demo
    page = out / "students" / "dave.html"
    dom = _browser("--dump-dom", page.as_uri(), tmp_path=tmp_path).stdout
    assert 'id="student-id">dave<' in dom
    assert 'id="total-score">' in dom and "outputs look swapped" in dom
    assert dom.count('src="data:image/png;base64,') >= 2  # 1c curve and 2a regions
    shot = tmp_path / "dave.png"
    _browser(f"--screenshot={shot}", "--window-size=1000,2400", page.as_uri(), tmp_path=tmp_path)
    assert shot.is_file() and shot.stat().st_size > 20_000  # a page with plots, not a blank one


def test_index_lists_every_student_in_a_real_browser(graded_demo, tmp_path):
    _, out = graded_demo
    dom = _browser("--dump-dom", (out / "index.html").as_uri(), tmp_path=tmp_path).stdout
    for student in ("alice", "bob", "carol", "dave", "erin"):
        assert f'href="students/{student}.html"' in dom
    assert "pass rate" in dom and 'alt="score histogram"' in dom


def test_student_ids_and_messages_are_escaped(tmp_path, model_dir):
    subs = tmp_path / "subs"
    evil = "<script>alert(1)</script>"
    (subs / evil.replace("/", "_")).mkdir(parents=True)
    (subs / evil.replace("/", "_") / "1c.h5").write_text(evil)
    out = tmp_path / "out"
    assert run_grader("grade", str(subs), "-a", str(TUTORIAL6), "-o", str(out)).returncode == 0
    pages = list((out / "students").glob("*.html"))
    assert len(pages) == 1
    html = pages[0].read_text() + (out / "index.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def _overflow_at(page, width, tmp_path) -> tuple[int, int]:
    """(the page's scroll width, the window's width) in Chromium at ``width`` CSS pixels."""
    probe = tmp_path / f"probe-{page.name}"
    html = page.read_text().replace(
        "</body>", "<script>document.title = 'W' + document.documentElement.scrollWidth + 'x' + "
                   "window.innerWidth;</script></body>")
    probe.write_text(html)
    dom = _browser("--dump-dom", f"--window-size={width},900", probe.as_uri(), tmp_path=tmp_path).stdout
    import re

    m = re.search(r"<title>W(\d+)x(\d+)</title>", dom)
    assert m, dom[:500]
    return int(m.group(1)), int(m.group(2))


def test_pages_fit_a_phone_and_a_desktop(graded_demo, tmp_path):
    """At 400 px wide the page body never scrolls sideways (wide tables scroll inside themselves)."""
    _, out = graded_demo
    for page in (out / "index.html", out / "students" / "dave.html", out / "students" / "heidi.html"):
        assert '<meta name="viewport"' in page.read_text()
        for width in (400, 1200):
            scroll, window = _overflow_at(page, width, tmp_path)
            assert scroll <= window, (page.name, width, scroll, window)
