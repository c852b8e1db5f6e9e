"""A student's ``grader check`` from the kit, as an ordinary user, where the sandbox cannot be had.

The kit is ``grader kit``'s (``build_kit``, without the wheel test_kit installs), written with the student's
work into a folder whose path holds spaces and non-ASCII letters; the student (the setpriv pattern of
test_security) runs ``grader check`` from there.
Two real machines: bubblewrap not installed (not on PATH), and bubblewrap installed but unable to make a user
namespace (the check runs inside a real bubblewrap with ``--disable-userns``, as where
``max_user_namespaces`` is 0).  Either way the check still gives its verdicts (exit 1: tasks are missing, not
a report of zeros), says loudly why the student's code runs unsandboxed and what to do, on the terminal and
on the page, and the script really ran (it reads a kit file by its host path: unsandboxed it can).  And
where bubblewrap works, the same check in the same path is sandboxed (that read fails) and warns of nothing.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, TUTORIAL6

UID = 4245
BWRAP = "/usr/bin/bwrap"
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path(BWRAP).is_file() or not shutil.which("setpriv"),
                                reason="needs root (to become the student), setpriv and bubblewrap in /usr/bin")

WHY = {"no bubblewrap": "bubblewrap (bwrap) is not installed",
       "no user namespaces": "Creating new namespace failed",
       "a sandbox": None}  # bubblewrap works: the same check, sandboxed, in the same path


@pytest.fixture(params=sorted(WHY))
def machine(request):
    return request.param


def _path_without_bwrap(home: Path) -> str:
    """A PATH like this machine's with every command but bwrap (linked one by one: /usr/bin holds bwrap)."""
    bin_dir = home / "bin-without-bwrap"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(":"):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            target = bin_dir / name
            if name != "bwrap" and not target.exists() and not target.is_symlink():
                target.symlink_to(Path(folder) / name)
    return str(bin_dir)


def test_check_from_a_kit_in_a_unicode_path_without_a_sandbox_warns_and_still_gives_verdicts(machine, request):
    from grader.kit import build_kit
    from test_security import _python_for

    home = Path(tempfile.mkdtemp(prefix="grader-field-", dir="/tmp"))  # a folder the student's uid can reach
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    work = home / "Mes devoirs" / "tutorial 6 — été"
    work.mkdir(parents=True)
    build_kit(TUTORIAL6, work / "tütorial6 kit", grader=None)
    # the script reads a file of the student's folder by its host path: it can unsandboxed, never in the sandbox
    (work / "nb.py").write_text("# %%%%\nprint(open(%r).read()[:20])\n" % str(work / "tütorial6 kit" / "README.txt"))
    shutil.copy(ROOT / "submissions" / "tutorial6" / "bob" / "2a.h5", work)
    python = _python_for(UID, home)
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(home)], check=True)
    home.chmod(0o755)

    path = _path_without_bwrap(home) if machine == "no bubblewrap" else os.environ["PATH"]
    inside = [] if machine != "no user namespaces" else [BWRAP, "--unshare-user", "--disable-userns", "--dev-bind", "/",
                                                    "/", "--"]
    env = {"PATH": path, "HOME": str(home), "TMPDIR": str(home), "LANG": "C.UTF-8", "COLUMNS": "200",
           "KERAS_BACKEND": "jax"}
    done = subprocess.run(["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", *inside, python, "-m",
                           "grader.cli", "check", ".", "-a", "tütorial6 kit"], env=env, cwd=work,
                          capture_output=True, text=True, timeout=900)
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, said[-3000:]  # verdicts: tasks missing, and the check itself ran
    page = next((work / "grader-check" / "students").glob("*.html")).read_text()
    if WHY[machine] is None:
        assert "NO SANDBOX" not in said and "NO SANDBOX" not in page
        assert "cell 1 error" in said and "FileNotFoundError" in said  # the host's path is not in the sandbox
    else:
        assert "WARNING: NO SANDBOX" in said and WHY[machine] in said and "Your notebook runs as you" in said
        assert "cell 1 ok" in said  # the script ran, unsandboxed, as said
        assert "NO SANDBOX" in page and WHY[machine] in " ".join(page.split())
    assert "task 2a: passed" in said and "Not ready to submit" in said
    assert "could not be graded" not in said.lower() and "No verdict" not in said
    assert (work / "grader-check" / "check.log").is_file()
