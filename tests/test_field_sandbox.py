"""The sandbox's start-up proof says, in the field's own failures, what is wrong and what fixes it.

Each machine is made for real, with no fake ``bwrap``: root without ``CAP_SYS_ADMIN`` (Docker's default;
``setpriv --bounding-set``), root without ``CAP_CHOWN``, and root of a user namespace that maps only root
(``unshare -r``: a container mapping only root).  Before, the last two said a bare
``OSError: [Errno 22] Invalid argument: '/tmp/grader-probe-.../work'`` followed by advice about Docker's
``--privileged`` that fixes neither; and the first did not say that an ordinary user's sandbox starts there
(which the unprivileged run below proves).
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT

UID = 4244
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/bwrap").is_file()
                                or not shutil.which("setpriv") or not shutil.which("unshare"),
                                reason="needs root, bubblewrap in /usr/bin, setpriv and unshare")

PROVE = "from grader.execute import sandbox; print(sandbox.prove_isolation()); print(sandbox.isolation_mode())"


def _prove(prefix: list[str], python: str = sys.executable, home: Path | None = None) -> tuple[str, str]:
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(home or ROOT)}
    if home is not None:
        env["TMPDIR"] = str(home)
    done = subprocess.run([*prefix, python, "-c", PROVE], env=env, cwd="/", capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    said, mode = done.stdout.strip().rsplit("\n", 1)
    return " ".join(said.split()), mode


def test_root_without_cap_sys_admin_is_told_that_an_ordinary_users_sandbox_starts_here(request):
    no_sys_admin = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]
    said, mode = _prove(no_sys_admin)
    from grader.execute.sandbox import _unreadable_python

    if not _unreadable_python(reach=True):  # uid 65534 reaches this Python: root drops to it (test_field_root)
        assert (said, mode) == ("None", "dropped")
        return
    assert mode == "none"  # here it lies under /root, where uid 65534 cannot reach it
    assert said.startswith("NO SANDBOX") and "Creating new namespace failed: Operation not permitted" in said
    assert "running the grader as an ordinary, non-root user is enough" in said
    # and it is so: the same container, the grader run by an ordinary user, proves its sandbox
    from test_security import _python_for

    home = Path(tempfile.mkdtemp(prefix="grader-field-", dir="/tmp"))  # a folder the uid can reach
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    python = _python_for(UID, home)
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(home)], check=True)
    home.chmod(0o755)
    said, mode = _prove([*no_sys_admin, "setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups"], python,
                        home)
    assert (said, mode) == ("None", "user")


def test_root_of_a_user_namespace_without_uid_65534_is_told_so_not_a_bare_oserror():
    said, mode = _prove(["unshare", "--user", "--map-root-user"])
    assert mode == "none"
    assert said.startswith("NO SANDBOX: the grader runs as root, but this root cannot hand files to uid 65534")
    assert "maps no uid 65534" in said and "Run the grader as an ordinary, non-root user" in said
    assert "--privileged" not in said  # the container advice that does not fix this


def test_root_without_cap_chown_is_told_so():
    said, mode = _prove(["setpriv", "--bounding-set=-chown", "--inh-caps=-chown"])
    assert mode == "none"
    assert "cannot hand files to uid 65534" in said and "CAP_CHOWN" in said and "--privileged" not in said


def test_root_whose_python_the_sandbox_user_cannot_read_is_told_which_folder_not_about_containers(request):
    """A grader installed under a umask of 077 (its virtual environment mode 700): uid 65534 cannot run it.
    Before, the probe blamed the container (``--privileged``) and said an ordinary user's sandbox would do."""
    home = Path(tempfile.mkdtemp(prefix="grader-field-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    if system is None:
        pytest.skip("no system Python of this version")
    venv = home / "private-env"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "keras").is_dir())
    (site / "grader-test.pth").write_text(f"{ours}\n{ROOT}\n")
    venv.chmod(0o700)
    said, mode = _prove([], str(venv / "bin" / "python"))
    assert mode == "none"
    assert "Permission denied" in said  # what the sandbox said
    assert f"uid 65534 cannot read the grader's Python: {venv}" in said and "chmod -R o+rX" in said
    assert "--privileged" not in said and "non-root user is enough" not in said
