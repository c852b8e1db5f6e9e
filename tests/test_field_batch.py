"""The TA's batch where bubblewrap is real but cannot start: loud on the terminal and in grader.log, exit 2.

No fake ``bwrap``: the real one fails as it does in the field.  As root, the grader runs without
``CAP_SYS_ADMIN`` and user namespaces (Docker's default: ``setpriv --bounding-set=-sys_admin`` and a seccomp
filter, ``test_field_root.DOCKER_DEFAULT``), where bubblewrap says
``Creating new namespace failed: Operation not permitted``; as an unprivileged TA (the setpriv pattern of
test_security), inside a real bubblewrap with ``--disable-userns``, where no user namespace can be made
(a machine with ``max_user_namespaces = 0``).  ``grade -j 2`` must refuse before any worker or notebook
starts, say why on the terminal and in ``OUT/grader.log`` (a TA reading the log of an unattended run
found it empty before), and write no results.json that would list the class as "missing".
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, TUTORIAL6
from test_field_root import DOCKER_DEFAULT

UID = 4243
SECRET = "field-batch-test-secret-0123456789abcdef0123456789"
BWRAP = "/usr/bin/bwrap"

pytestmark = [pytest.mark.skipif(os.geteuid() != 0 or not Path(BWRAP).is_file() or not shutil.which("setpriv"),
                                 reason="needs root, setpriv and bubblewrap in /usr/bin")]

#: how each TA's grader is started so that the real bubblewrap cannot create its namespaces
NO_NAMESPACES = {
    # Docker's default: no CAP_SYS_ADMIN, and seccomp refuses user namespaces (else root drops to uid 65534)
    "root": (DOCKER_DEFAULT, "Creating new namespace failed: Operation not permitted",
             "(as root: bubblewrap, then setpriv"),
    "unprivileged": (["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", BWRAP, "--unshare-user",
                      "--disable-userns", "--dev-bind", "/", "/", "--"],
                     "Creating new namespace failed", f"(as uid {UID}: bubblewrap in a new user namespace)"),
}


@pytest.fixture(params=sorted(NO_NAMESPACES))
def who(request):
    return request.param


def test_a_batch_whose_real_bubblewrap_cannot_start_says_so_on_the_terminal_and_in_the_log(who, request):
    home = Path(tempfile.mkdtemp(prefix="grader-field-", dir="/tmp"))  # a folder the TA's uid can reach
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    subs = home / "subs"
    for student in ("ann", "ben"):
        (subs / student).mkdir(parents=True)
        (subs / student / "nb.py").write_text("# %%%%\nopen(%r, 'w').write('x')\n" % str(home / f"ran-{student}"))
        shutil.copy(ROOT / "submissions" / "tutorial6" / "bob" / "2a.h5", subs / student)
    python = sys.executable
    prefix, said_first, how = NO_NAMESPACES[who]
    if who == "unprivileged":
        from test_security import _python_for

        subprocess.run(["chown", "-R", f"{UID}:{UID}", str(home)], check=True)
        home.chmod(0o755)
        python = _python_for(UID, home)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GRADER_SECRET": SECRET, "KERAS_BACKEND": "jax",
           "TMPDIR": str(home), "LANG": "C.UTF-8", "COLUMNS": "200"}
    done = subprocess.run([*prefix, python, "-m", "grader.cli", "grade", str(subs), "-a", str(TUTORIAL6), "-o",
                           str(home / "out"), "-j", "2"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    said = " ".join(done.stderr.split()) + " ".join(done.stdout.split())
    assert done.returncode == 2, said[-3000:]
    for words in ("NO SANDBOX", said_first, how, "2 submission(s) hold notebooks or scripts", "--allow-unsandboxed"):
        assert words in said
    log = " ".join((home / "out" / "grader.log").read_text().split())
    for words in ("NO SANDBOX", said_first, how, "2 submission(s) hold notebooks or scripts", "--allow-unsandboxed"):
        assert words in log, log[-2000:]
    assert not (home / "out" / "results.json").exists()  # nobody graded, so nobody "missing"
    assert not any((home / f"ran-{s}").exists() for s in ("ann", "ben"))  # no student code ran
