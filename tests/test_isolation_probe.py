"""Isolation is proven, not assumed: a bubblewrap that cannot start never yields a "missing" task.

The failing bubblewrap of a container without user namespaces or CAP_SYS_ADMIN is reproduced by a real
executable ``bwrap`` first on PATH, through the real CLI, as root and as an unprivileged TA (the setpriv
pattern of test_security): ``grade`` refuses before any notebook runs (exit 2, why and what to do),
``calibrate`` too, ``check`` warns loudly; and a bubblewrap that fails later, for one student only, leaves
that student "could not be graded" in the pages, the counts, ``grader review``, ``results.json`` and the
Gradescope export.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, TUTORIAL6

needs_bwrap = pytest.mark.skipif(not Path("/usr/bin/bwrap").is_file(), reason="bubblewrap is not in /usr/bin")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (and setpriv for the unprivileged TA)")
UID = 4242
SECRET = "isolation-probe-test-secret-0123456789abcdef"
NAMESPACE_FAILED = "Creating new namespace failed: Operation not permitted"

#: bubblewrap in a container that forbids namespaces
FAILING_BWRAP = f"""#!/bin/sh
echo "bwrap: {NAMESPACE_FAILED}" >&2
exit 1
"""

#: the real bubblewrap (itself for the nested one too: this script is not inside the sandbox), except for the
#: sandbox that stages a student folder named "unlucky": it fails as above, after the batch's probe passed
UNLUCKY_BWRAP = f"""#!/bin/bash
real=/usr/bin/bwrap
args=()
for a in "$@"; do
  if [ "$a" = "$0" ]; then args+=("$real"); else args+=("$a"); fi
  case "$a" in /proc/self/fd/*) case "$(readlink "$a")" in */unlucky)
    echo "bwrap: {NAMESPACE_FAILED}" >&2; exit 1;; esac;; esac
done
exec "$real" "${{args[@]}}"
"""


class Setup:
    """A folder the grading user owns, a fake ``bwrap`` first on PATH, and how to run the CLI as that user."""

    def __init__(self, home: Path, bwrap: str, uid: int | None):
        self.home, self.uid = home, uid
        (home / "bin").mkdir(parents=True)
        (home / "bin" / "bwrap").write_text(bwrap)
        (home / "bin" / "bwrap").chmod(0o755)
        self.python = sys.executable
        if uid is not None:
            from test_security import _python_for

            subprocess.run(["chown", "-R", f"{uid}:{uid}", str(home)], check=True)
            home.chmod(0o755)
            self.python = _python_for(uid, home)

    def grader(self, *args, timeout=900) -> subprocess.CompletedProcess:
        env = {"PATH": f"{self.home / 'bin'}:{os.environ['PATH']}", "HOME": str(self.home), "GRADER_SECRET": SECRET,
               "KERAS_BACKEND": "jax", "TMPDIR": str(self.home), "LANG": "C.UTF-8", "COLUMNS": "200"}
        who = [] if self.uid is None else ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"]
        return subprocess.run([*who, self.python, "-m", "grader.cli", *map(str, args)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)

    def own(self):
        if self.uid is not None:
            subprocess.run(["chown", "-R", f"{self.uid}:{self.uid}", str(self.home)], check=True)


@pytest.fixture(params=["root", "unprivileged"])
def who(request):
    return None if request.param == "root" else UID


def _setup(request, bwrap: str, uid) -> Setup:
    home = Path(tempfile.mkdtemp(prefix="grader-iso-", dir="/tmp"))  # a folder the TA's uid can reach
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    return Setup(home, bwrap, uid)


def _class(home: Path) -> Path:
    """A notebook student (the sheet's own notebook, frank's) and a student with a tiny script and a model."""
    subs = home / "subs"
    (subs / "unlucky").mkdir(parents=True)
    shutil.copy(ROOT / "submissions" / "tutorial6" / "frank" / "tutorial6.ipynb", subs / "unlucky")
    (subs / "lucky").mkdir()
    (subs / "lucky" / "nb.py").write_text("# %%\nprint('hello from the sandbox')\n")
    shutil.copy(ROOT / "submissions" / "tutorial6" / "bob" / "2a.h5", subs / "lucky")
    return subs


def test_the_probe_runs_a_command_through_the_sandbox_as_the_runs_do():
    from grader.execute import sandbox

    if not sandbox.bwrap_path():
        pytest.skip("bubblewrap is not installed")
    mode = "root" if os.geteuid() == 0 else "user"
    assert sandbox.probe(mode) is None
    assert sandbox.prove_isolation() is None and sandbox.isolation_mode() == mode


@needs_bwrap
@as_root
def test_the_probe_goes_as_far_as_the_nested_bubblewrap(tmp_path, monkeypatch):
    """A bubblewrap the outer sandbox runs but student code's nested one cannot (a bwrap outside the folders
    bound inside: here a real pass-through in /tmp) is no sandbox: the probe runs the whole root chain."""
    (tmp_path / "bwrap").write_text('#!/bin/sh\nexec /usr/bin/bwrap "$@"\n')
    (tmp_path / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    from grader.execute import sandbox

    try:
        said = sandbox.probe("root")
        assert said is not None and "nested unprivileged bubblewrap" in said and str(tmp_path / "bwrap") in said
        monkeypatch.setenv("PATH", os.environ["PATH"].split(":", 1)[1])
        assert sandbox.probe("root") is None  # the real one, in /usr/bin, is bound inside
    finally:
        sandbox.prove_isolation()  # this process goes by the real bubblewrap again


@needs_bwrap
@as_root
def test_a_failing_bubblewrap_stops_the_batch_before_any_notebook(request, who):
    s = _setup(request, FAILING_BWRAP, who)
    subs = _class(s.home)
    s.own()
    done = s.grader("grade", subs, "-a", TUTORIAL6, "-o", s.home / "out", "--workers", 1)
    assert done.returncode == 2, done.stderr[-3000:]
    said = " ".join(done.stderr.split())
    assert NAMESPACE_FAILED in said  # what bubblewrap said
    assert ("(as root: bubblewrap, then setpriv" if who is None else f"(as uid {who}: bubblewrap") in said
    assert "NO SANDBOX" in said
    assert "--allow-unsandboxed" in said and "2 submission(s) hold notebooks or scripts" in said
    assert not (s.home / "out" / "results.json").exists()  # nobody graded, nobody "missing"


@needs_bwrap
@as_root
def test_allow_unsandboxed_runs_the_notebooks_with_a_loud_warning(request):
    s = _setup(request, FAILING_BWRAP, None)
    subs = _class(s.home)
    shutil.rmtree(subs / "unlucky")
    done = s.grader("grade", subs, "-a", TUTORIAL6, "-o", s.home / "out", "--workers", 1, "--allow-unsandboxed")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING: NO SANDBOX" in done.stderr and NAMESPACE_FAILED in " ".join(done.stderr.split())
    results = json.loads((s.home / "out" / "results.json").read_text())
    student = results["students"][0]
    assert student["notebooks"][0]["sandboxed"] is False and student["notebooks"][0]["sandbox_mode"] == "none"
    assert next(t for t in student["tasks"] if t["id"] == "2a")["status"] == "passed"
    # for whoever reads the files instead of the terminal: the class's results and the batch's log
    assert any(NAMESPACE_FAILED in w for w in results["warnings"])
    assert NAMESPACE_FAILED in (s.home / "out" / "grader.log").read_text()


@needs_bwrap
@as_root
def test_a_sandbox_that_fails_for_one_student_leaves_them_could_not_be_graded(request, who):
    s = _setup(request, UNLUCKY_BWRAP, who)
    subs = _class(s.home)
    s.own()
    out = s.home / "out"
    done = s.grader("grade", subs, "-a", TUTORIAL6, "-o", out, "--workers", 1)
    assert done.returncode == 0, done.stderr[-3000:]
    import sqlite3

    with sqlite3.connect(out / "gradebook.sqlite") as db:  # the counts the progress line shows, as recorded
        counts = json.loads(db.execute("SELECT counts FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
    assert (counts["error"], counts["measured"]) == (1, 2), counts
    students = {st["id"]: st for st in json.loads((out / "results.json").read_text())["students"]}
    unlucky, lucky = students["unlucky"], students["lucky"]
    assert {t["status"] for t in unlucky["tasks"]} == {"error"}  # never "missing"
    assert all(t["message"].startswith("Could not be graded: tutorial6.ipynb could not be run") and
               NAMESPACE_FAILED in t["message"] for t in unlucky["tasks"])
    assert lucky["notebooks"][0]["sandboxed"] is True  # the others are graded, isolated
    assert next(t for t in lucky["tasks"] if t["id"] == "2a")["status"] == "passed"
    assert "missing" in {t["status"] for t in lucky["tasks"]}  # lucky's own gaps are still missing

    page = next((out / "students").glob("unlucky*.html")).read_text()
    assert "Could not be graded" in page

    review = subprocess.run([sys.executable, "-m", "grader.cli", "review", "-o", str(out), "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert review.returncode == 0, review.stderr[-2000:]
    items = json.loads(review.stdout)
    items = items["items"] if isinstance(items, dict) else items
    assert (items[0]["kind"], items[0]["students"]) == ("could not be graded", ["unlucky"])

    export = subprocess.run([sys.executable, "-m", "grader.cli", "export", "-o", str(out), "--to",
                             str(s.home / "export"), "--format", "gradescope"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert export.returncode == 0, export.stderr[-2000:]
    gradescope = json.loads(next((s.home / "export").rglob("unlucky*/results.json")).read_text())
    assert "Could not be graded" in gradescope["output"]
    assert all("error" in t["tags"] and "Could not be graded" in t["output"] for t in gradescope["tests"])


@needs_bwrap
@as_root
def test_calibrate_refuses_to_time_the_reference_without_a_sandbox(request):
    s = _setup(request, FAILING_BWRAP, None)
    spec = s.home / "assignment"
    shutil.copytree(TUTORIAL6, spec)
    before = (spec / "calibration.toml").read_bytes()
    done = s.grader("calibrate", spec, "--timings-only", "--timing-runs", 1)
    assert done.returncode == 2, done.stderr[-3000:]
    said = " ".join(done.stderr.split())
    assert NAMESPACE_FAILED in said and "the sandbox does not start here" in said and "--allow-unsandboxed" in said
    assert (spec / "calibration.toml").read_bytes() == before


@needs_bwrap
@as_root
def test_check_says_loudly_that_the_students_code_runs_unsandboxed(request):
    s = _setup(request, FAILING_BWRAP, None)
    (s.home / "mine").mkdir()
    (s.home / "mine" / "nb.py").write_text("# %%\nprint('checking')\n")
    done = s.grader("check", s.home / "mine" / "nb.py", "-a", TUTORIAL6, "-o", s.home / "check")
    assert done.returncode in (0, 1), done.stderr[-3000:]
    said = " ".join(done.stderr.split())
    assert "WARNING: NO SANDBOX" in said and NAMESPACE_FAILED in said
    assert "Your notebook runs as you" in said
