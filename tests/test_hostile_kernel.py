"""Hostile notebooks aimed at the kernel's own files (issue 26: findings 1, 2, 5 and two of 9).

Each test hands a real notebook to the real sandbox, in a subprocess with a generous timeout (a grader
that hangs fails the test instead of hanging it), as root and, where behaviour differs, as an
unprivileged TA (uid 4242, through setpriv): the connection file swapped for a link to a host file, to a
FIFO or to /dev/zero before the kernel dies; a link to the TA's file in a folder made read-only before
the scratch folder's removal; a submission carrying its own ``ipykernel_launcher.py``, ``ipykernel/``,
``zmq.py`` and ``numpy.py``; a kernelspec without ``display_name``.  Run as a script, this module is the
harness that grades one notebook and prints what happened as JSON.
"""
import atexit
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL6 = ROOT / "reference" / "tutorial6"
UID = 4242  # the unprivileged TA
HARNESS_TIMEOUT_S = 600  # a whole run takes well under a minute; past this the grader hung
HARNESS_MEMORY = 3 * 2**30  # the harness's own data limit: an unbounded read fails instead of eating the machine


def _harness(subs: str, scratch: str) -> dict:
    """Grade the one notebook in ``subs``/s as ``measure`` does (execute_notebook, fixed limits); what ran."""
    sys.path.insert(0, str(ROOT))
    tempfile.tempdir = scratch
    from grader.execute import execute_notebook
    from grader.execute.limits import BatchLimits, Limit, TimeLimits
    from grader.harvest import Harvester
    from grader.intake import collect
    from grader.intake.formats import NOTEBOOK, SCRIPT
    from grader.spec import load_assignment

    assignment = load_assignment(TUTORIAL6)
    sub = collect(subs, assignment)[0]
    file = next(f for f in sub.files if f.format in (NOTEBOOK, SCRIPT) and f.relative.startswith("nb."))
    limits = BatchLimits(tuple((b, TimeLimits(b, Limit(120, "test"), Limit(400, "test")))
                               for b in ("jax", "tensorflow")))
    try:
        with execute_notebook(assignment, file, sub.root, harvester=Harvester(assignment), limits=limits,
                              seed=7) as ex:
            return {"cells": [[c.status, c.error_name, c.error_value] for c in ex.run.cells],
                    "restarts": ex.run.kernel_restarts, "sandboxed": ex.run.sandboxed, "notes": ex.notes,
                    "failures": ex.failures}
    except Exception as e:
        return {"raised": f"{type(e).__name__}: {e}", "hint": str(getattr(e, "hint", ""))}


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_DATA, (HARNESS_MEMORY, resource.getrlimit(resource.RLIMIT_DATA)[1]))


def grade(subs: Path, scratch: Path, uid: int | None = None, python: str = sys.executable) -> dict:
    """Run the harness on ``subs`` with ``python`` (as ``uid`` when given) and return its report."""
    env = {"PATH": os.environ["PATH"], "HOME": str(scratch.parent / "home"), "KERAS_BACKEND": "jax",
           "TMPDIR": str(scratch),
           "TF_CPP_MIN_LOG_LEVEL": "3", "LANG": "C.UTF-8"}
    cmd = [python, str(Path(__file__).resolve()), str(subs), str(scratch)]
    if uid is not None:
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd]
    try:
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=HARNESS_TIMEOUT_S,
                              preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the grader hung: no result after {HARNESS_TIMEOUT_S} s") from None
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"the harness failed ({done.returncode}): {done.stderr[-3000:]}"
    return json.loads(lines[-1])


if __name__ == "__main__":
    print(json.dumps(_harness(sys.argv[1], sys.argv[2])))
    sys.stdout.flush()
    os._exit(0)  # nothing left to wait for (the grader's own threads)

import pytest  # noqa: E402  (the harness above needs none of the test machinery)

from grader.execute.sandbox import bwrap_path, isolation_mode  # noqa: E402
from test_security import _python_for  # noqa: E402

needs_sandbox = pytest.mark.skipif(not bwrap_path() or isolation_mode() == "none",
                                   reason="no sandbox here (bubblewrap missing or unusable)")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def script(*cells: str) -> str:
    return "".join(f"# %%\n{c}\n" for c in cells)


# Every name the connection file may have: the one the kernel was given, and the one in the runtime folder
# (where it lived before), each replaced by a link to TARGET; then the kernel dies, and the grader restarts it.
SWAP_CONNECTION_FILE = """import os
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
runtime = os.path.dirname(app.ip)
target = {target!r}
if target == 'FIFO':
    target = os.path.join(runtime, 'pipe')
    os.mkfifo(target)
for path in {{app.connection_file, os.path.join(runtime, 'kernel.json')}}:
    try:
        os.unlink(path)
    except OSError as e:
        print('unlink', path, e)
    try:
        os.symlink(target, path)
    except OSError as e:
        print('symlink', path, e)
os._exit(1)"""
AFTER = "value = 6 * 7\nprint('the cell after the restart ran', value)"


def _unprivileged(request) -> tuple[Path, str]:
    """A home for the unprivileged TA and a Python it can run (skips where unprivileged user namespaces are
    not available)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    probe = subprocess.run(["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", bwrap_path(),
                            "--unshare-user", "--disable-userns", "--ro-bind", "/", "/", "--", "/bin/true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unprivileged user namespaces are not available here: {probe.stderr.decode()[:200]}")
    home = Path(tempfile.mkdtemp(prefix="grader-ta-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    home.chmod(0o755)
    return home, _python_for(UID, home)


def _setup(home: Path, source: str, uid: int | None, extra: dict | None = None, name: str = "nb.py"):
    """subs/s/<name> with ``source`` (and ``extra`` files), a scratch folder; owned by ``uid`` when given."""
    folder = home / "subs" / "s"
    folder.mkdir(parents=True)
    (folder / name).write_text(source)
    for rel, text in (extra or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    # the grader's scratch folders (TMPDIR), its HOME beside them: a short path under /tmp, as a TA's TMPDIR is
    # (the kernel's sockets live there, and a unix socket's path has at most 107 bytes; pytest-xdist's tmp_path
    # is longer)
    short = Path(tempfile.mkdtemp(prefix="ghk-", dir="/tmp"))
    short.chmod(0o755)
    atexit.register(shutil.rmtree, short, True)
    scratch = short / "scratch"
    scratch.mkdir()
    (short / "home").mkdir()
    if uid is not None:
        subprocess.run(["chown", "-R", f"{uid}:{uid}", str(home / "subs"), str(scratch), str(short / "home")],
                       check=True)
    return home / "subs", scratch


def _victim(path: Path, uid: int, mode: int) -> tuple:
    path.write_text("VICTIM-FILE-1618")
    os.chown(path, uid, uid)
    path.chmod(mode)
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def _unchanged(path: Path, before: tuple):
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == before, f"{path} was changed: {st}"
    assert path.read_text() == "VICTIM-FILE-1618"


def _restarted_and_went_on(report: dict):
    """The hostile cell died, the kernel was restarted, the next cell ran in it; no internal error."""
    assert "raised" not in report, report
    statuses = [c[0] for c in report["cells"]]
    assert statuses == ["died", "ok"], report["cells"]
    assert report["restarts"] == 1 and report["sandboxed"] is True


# -- finding 1: the connection file swapped for a link to a host file ---------------------------------------

@needs_sandbox
@as_root
def test_a_connection_file_linked_to_a_root_file_changes_nothing(tmp_path):
    home = tmp_path
    victim = tmp_path / "root-secret.txt"
    before = _victim(victim, 0, 0o600)
    subs, scratch = _setup(home, script(SWAP_CONNECTION_FILE.format(target=str(victim)), AFTER), None)
    report = grade(subs, scratch)
    _unchanged(victim, before)
    _restarted_and_went_on(report)


@needs_sandbox
def test_a_connection_file_linked_to_the_tas_file_changes_nothing_unprivileged(request):
    home, python = _unprivileged(request)
    victim = home / "ta-grades.txt"
    before = _victim(victim, UID, 0o600)
    subs, scratch = _setup(home, script(SWAP_CONNECTION_FILE.format(target=str(victim)), AFTER), UID)
    report = grade(subs, scratch, uid=UID, python=python)
    _unchanged(victim, before)
    _restarted_and_went_on(report)


# -- finding 2: the connection file swapped for a link to a FIFO, or to /dev/zero --------------------------

@needs_sandbox
@as_root
def test_a_connection_file_linked_to_a_fifo_does_not_stop_the_grader(tmp_path):
    subs, scratch = _setup(tmp_path, script(SWAP_CONNECTION_FILE.format(target="FIFO"), AFTER), None)
    _restarted_and_went_on(grade(subs, scratch))


@needs_sandbox
def test_a_connection_file_linked_to_a_fifo_does_not_stop_the_grader_unprivileged(request):
    home, python = _unprivileged(request)
    subs, scratch = _setup(home, script(SWAP_CONNECTION_FILE.format(target="FIFO"), AFTER), UID)
    _restarted_and_went_on(grade(subs, scratch, uid=UID, python=python))


@needs_sandbox
def test_a_connection_file_linked_to_dev_zero_is_never_read(tmp_path):
    subs, scratch = _setup(tmp_path, script(SWAP_CONNECTION_FILE.format(target="/dev/zero"), AFTER), None)
    _restarted_and_went_on(grade(subs, scratch))


# -- the kernel's ipc sockets swapped for links to a host socket: the grader's reconnection follows nothing ----

SWAP_SOCKETS = """import os
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
for port in (app.shell_port, app.iopub_port, app.stdin_port, app.control_port, app.hb_port):
    path = '%s-%d' % (app.ip, port)
    os.unlink(path)
    os.symlink({target!r}, path)
os._exit(1)"""


@needs_sandbox
@as_root
def test_kernel_sockets_linked_to_a_host_socket_are_never_connected_to(tmp_path):
    """The grader's ZMQ sockets reconnect by themselves when the kernel goes: by path, that reached whatever
    socket a link there named (as root, a root-only socket of the host, sent the next cell's code)."""
    import socket
    import threading

    host = tmp_path / "host-service.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(host))
    host.chmod(0o600)
    server.listen(64)
    server.settimeout(0.2)
    heard, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            heard.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        subs, scratch = _setup(tmp_path, script(SWAP_SOCKETS.format(target=str(host)), AFTER), None)
        report = grade(subs, scratch)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert heard == [], f"the grader connected {len(heard)} time(s) to the host socket a link named"
    _restarted_and_went_on(report)


# -- finding 5: the scratch folder's removal and a link in a read-only folder (non-root only) -------------

@needs_sandbox
def test_removing_the_scratch_folder_never_changes_a_link_target_unprivileged(request):
    home, python = _unprivileged(request)
    victim = home / "ta-notes.txt"
    before = _victim(victim, UID, 0o400)
    hostile = "import os\nos.mkdir('d')\nos.symlink(%r, 'd/link')\nos.chmod('d', 0o555)" % str(victim)
    subs, scratch = _setup(home, script(hostile), UID)
    report = grade(subs, scratch, uid=UID, python=python)
    assert "raised" not in report and [c[0] for c in report["cells"]] == ["ok"], report
    _unchanged(victim, before)
    assert list(scratch.iterdir()) == [], "the scratch folder was left behind"


@needs_sandbox
def test_folders_made_unreadable_are_still_removed_unprivileged(request):
    """Folders of mode 000 and 555, nested: the removal unlocks each (it once retried ``os.open`` without its
    flags, and the TypeError escaped as the grader's failure).  A folder the grader cannot read is over the disk
    quota (it could hide any amount, 79ad59c): the cell is stopped with that reason, and still all is removed."""
    home, python = _unprivileged(request)
    hostile = ("import os\nos.makedirs('a/b/c')\nopen('a/b/c/f.txt', 'w').write('x')\n"
               "for d in ('a/b/c', 'a/b', 'a'):\n    os.chmod(d, 0o000 if d != 'a' else 0o555)")
    subs, scratch = _setup(home, script(hostile), UID)
    report = grade(subs, scratch, uid=UID, python=python)
    assert "raised" not in report and report["cells"] == [
        ["quota", "DiskQuota", "the notebook made a folder the grader cannot read (a/b)"]], report
    assert list(scratch.iterdir()) == [], "the scratch folder was left behind"


# -- finding 9: the submission's own kernel modules; a kernelspec without display_name --------------------

IMPOSTOR = "print('I AM THE KERNEL NOW, says the student')\nraise SystemExit(3)\n"


@needs_sandbox
def test_a_submitted_ipykernel_launcher_does_not_replace_the_kernel(tmp_path):
    checks = ("import sys, ipykernel, zmq, numpy\n"
              "for m in (ipykernel, zmq, numpy):\n"
              "    assert 'site-packages' in m.__file__, m.__file__\n"
              "assert 'IMPOSTOR' not in sys.modules\n"
              "from helper import VALUE\nassert VALUE == 42\n"
              "from tools import *\nprint(gen_xor_distribution)")
    subs, scratch = _setup(tmp_path, script(checks), None, extra={
        "ipykernel_launcher.py": IMPOSTOR, "zmq.py": "import sys; sys.modules['IMPOSTOR'] = 1\n" + IMPOSTOR,
        "numpy.py": "import sys; sys.modules['IMPOSTOR'] = 1\n" + IMPOSTOR,
        "ipykernel/__init__.py": "import sys; sys.modules['IMPOSTOR'] = 1\n" + IMPOSTOR,
        "helper.py": "VALUE = 42\n"})
    report = grade(subs, scratch)
    text = json.dumps(report)
    assert "I AM THE KERNEL NOW" not in text and "grader's environment" not in text, report
    assert "raised" not in report and [c[0] for c in report["cells"]] == ["ok"], report


@needs_sandbox
def test_a_kernelspec_without_display_name_is_graded(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 6 * 7"),
                                         nbformat.v4.new_code_cell("assert x == 42\nprint(x)")])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python"}  # no display_name (the schema's)
    subs, scratch = _setup(tmp_path, nbformat.writes(nb, version=4), None, name="nb.ipynb")
    report = grade(subs, scratch)
    assert "raised" not in report, report
    assert [c[0] for c in report["cells"]] == ["ok", "ok"], report
