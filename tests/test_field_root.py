"""Root in a container without ``CAP_SYS_ADMIN`` (Docker's default) still grades notebooks in a sandbox.

Made real with ``setpriv --bounding-set=-sys_admin`` (no fake ``bwrap``): root's own sandbox cannot start, so the
grader drops to uid 65534 and starts an ordinary user's sandbox (``dropped`` mode).  One hostile script is
graded twice, concurrently, by the real ``grade`` command: so, and by root with ``CAP_SYS_ADMIN`` (``root``
mode).  It must run as uid 65534 without capabilities, read no TA file (one root's and mode 600 that it can
see, one it cannot), write nowhere but its work folder, edit its own submitted file (mode 600 for root), and get
the same grade and the same findings as in root mode; each batch names its mode.  Where neither sandbox starts
(Docker's default seccomp profile also refuses user namespaces: a real seccomp filter here), ``grade`` refuses
loudly, exit 2, names the docker flags that fix it, and grades nobody; where uid 65534 cannot reach the grader's
Python, the probe names the folder.
"""
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, TUTORIAL6

SECRET = "field-root-test-secret-0123456789abcdef0123456789abcd"
NO_SYS_ADMIN = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"]
TA_TEXT = "TA-PRIVATE-5821"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/bwrap").is_file()
                                or not shutil.which("setpriv"),
                                reason="needs root, bubblewrap in /usr/bin and setpriv (util-linux)")

#: Docker's default seccomp profile, for what matters here: no new user namespace (unshare or clone with
#: CLONE_NEWUSER: EPERM; clone3, whose flags a filter cannot read: ENOSYS, and the C library falls back to clone);
#: installed with no_new_privs, then ARGV is run.  On x86-64 and arm64 (their audit arch, unshare and clone).
NO_USERNS = """import ctypes, os, platform, struct, sys
arch, unshare, clone = {"x86_64": (0xC000003E, 272, 56), "aarch64": (0xC00000B7, 97, 220)}[platform.machine()]
prog = [(0x20, 0, 0, 4), (0x15, 0, 8, arch), (0x20, 0, 0, 0), (0x15, 0, 1, 435), (0x06, 0, 0, 0x50000 | 38),
        (0x15, 1, 0, unshare), (0x15, 0, 3, clone), (0x20, 0, 0, 16), (0x45, 0, 1, 0x10000000),
        (0x06, 0, 0, 0x50001), (0x06, 0, 0, 0x7FFF0000)]
code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in prog))
fprog = struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(code))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0):
    sys.exit(f"seccomp: errno {ctypes.get_errno()}")
os.execvp(sys.argv[1], sys.argv[1:])
"""
#: Docker's default for root: no CAP_SYS_ADMIN, and seccomp refuses new user namespaces (``NO_USERNS``)
DOCKER_DEFAULT = [sys.executable, "-c", NO_USERNS, *NO_SYS_ADMIN]
PROVE = "from grader.execute import sandbox; print(sandbox.prove_isolation()); print(sandbox.isolation_mode())"

#: the hostile script: what it could reach, raised as JSON after FOUND
HOSTILE = """# %%
import json, os, subprocess
found = {"uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups(),
         "caps": [l.split()[1] for l in open("/proc/self/status")
                  if l.startswith(("CapEff", "CapPrm", "CapBnd", "NoNewPrivs"))]}
def attempt(key, fn):
    try:
        found[key] = fn()
    except OSError as e:
        found[key] = type(e).__name__
attempt("ta_seen", lambda: open(VISIBLE).read())
attempt("ta_hidden", lambda: open(HIDDEN).read())
attempt("write_python", lambda: open(os.path.join(os.path.dirname(VISIBLE), "planted"), "w").write("x"))
attempt("write_root", lambda: open("/planted", "w").write("x"))
attempt("write_home", lambda: open(os.path.join(HOME, "planted"), "w").write("x"))
attempt("write_checkout", lambda: open(os.path.join(CHECKOUT, "planted"), "w").write("x"))
attempt("write_work", lambda: open("made.txt", "w").write("ok"))
attempt("edit_own", lambda: open("given.txt", "a").write("+") and open("given.txt").read())
found["userns"] = subprocess.run(["unshare", "-r", "true"], capture_output=True).returncode
raise RuntimeError("FOUND" + json.dumps(found, sort_keys=True) + "END")
"""


def _python(home: Path) -> str:
    """A Python uid 65534 can reach (this one may live under /root): a virtual environment of the system's
    Python of this version under ``home``, seeing this environment's packages through a .pth file."""
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    if system is None:
        pytest.skip("no system Python of this version for uid 65534")
    venv = home / "env"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "keras").is_dir())
    (site / "grader-test.pth").write_text(f"{ours}\n{ROOT}\n")
    return str(venv / "bin" / "python")


def _grade(prefix: list[str], python: str, home: Path, out: str) -> subprocess.Popen:
    # GRADER_FUSED=nocache: the script trains nothing, so no compile cache is built for it
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GRADER_SECRET": SECRET, "KERAS_BACKEND": "jax",
           "TMPDIR": str(home), "LANG": "C.UTF-8", "COLUMNS": "250", "GRADER_FUSED": "nocache"}
    return subprocess.Popen([*prefix, python, "-m", "grader.cli", "grade", str(home / "subs"), "-a", str(TUTORIAL6),
                             "-o", str(home / out), "-j", "1"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def graded():
    home = Path(tempfile.mkdtemp(prefix="grader-root-", dir="/tmp"))
    try:
        home.chmod(0o755)
        python = _python(home)
        visible = Path(python).parent.parent / "ta-notes.txt"  # inside a folder bound into the sandbox
        visible.write_text(TA_TEXT)
        visible.chmod(0o600)
        (home / "private").mkdir(mode=0o700)
        hidden = home / "private" / "grades-draft.txt"
        hidden.write_text(TA_TEXT)
        student = home / "subs" / "mallory"
        student.mkdir(parents=True)
        code = HOSTILE.replace("VISIBLE", repr(str(visible))).replace("HIDDEN", repr(str(hidden)))
        code = code.replace("HOME", repr(str(home))).replace("CHECKOUT", repr(str(ROOT)))
        (student / "nb.py").write_text(code)
        (student / "given.txt").write_text("given")
        (student / "given.txt").chmod(0o600)  # the TA's copy: root's, mode 600
        shutil.copy(ROOT / "submissions" / "tutorial6" / "bob" / "2a.h5", student)
        runs = {"dropped": _grade(NO_SYS_ADMIN, python, home, "out-dropped"),
                "root": _grade([], python, home, "out-root")}
        done = {mode: (p.communicate(timeout=900), p.returncode) for mode, p in runs.items()}
        yield home, done, visible
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _student(home: Path, out: str) -> dict:
    return json.loads((home / out / "results.json").read_text())["students"][0]


def _found(student: dict) -> dict:
    failure = student["notebooks"][0]["failures"][0]
    return json.loads(re.search(r"FOUND(\{.*?\})END", failure["traceback"]).group(1))


def test_root_without_cap_sys_admin_grades_in_the_dropped_sandbox_and_says_so(graded):
    home, done, _ = graded
    (out, err), code = done["dropped"]
    assert code == 0, err[-3000:]
    said = " ".join((out + err).split())
    assert "sandbox mode 'dropped': student code runs as root without CAP_SYS_ADMIN: setpriv to uid 65534" in said
    assert "NO SANDBOX" not in said + err
    log = " ".join((home / "out-dropped" / "grader.log").read_text().split())
    assert "sandbox mode 'dropped'" in log
    (out, err), code = done["root"]
    assert code == 0, err[-3000:]
    assert "sandbox mode 'root'" in " ".join((out + err).split())


def test_the_hostile_script_runs_as_uid_65534_and_reaches_nothing_of_the_tas(graded):
    home, _, visible = graded
    student = _student(home, "out-dropped")
    assert student["notebooks"][0]["sandboxed"] is True
    assert student["notebooks"][0]["sandbox_mode"] == "dropped"  # results.json says how, for CI and the TA
    found = _found(student)
    assert (found["uid"], found["euid"], found["groups"]) == (65534, 65534, [])
    # no capability, even in its own namespace, and no_new_privs: no setuid program gives one back
    assert [int(c, 16) for c in found["caps"]] == [0, 0, 0, 1]
    assert found["ta_seen"] == "PermissionError" and found["ta_hidden"] == "FileNotFoundError"
    assert found["write_python"] == found["write_root"] == found["write_checkout"] == "OSError"  # read-only
    # the TA's folder above the scratch folders (TMPDIR) is, inside, an empty folder of the sandbox's own /tmp
    # (a capped tmpfs), which the sandbox user owns here: what it writes there never reaches the host's
    assert found["write_home"] == 1
    assert found["write_work"] == 2 and found["edit_own"] == "given+"  # its work folder and its own files
    assert found["userns"] != 0  # no user namespace of its own
    assert TA_TEXT not in json.dumps(student)
    assert not (visible.parent / "planted").exists() and not (home / "planted").exists()
    assert not Path("/planted").exists() and not (ROOT / "planted").exists()


def test_the_dropped_sandbox_grades_as_root_s_own_does(graded):
    home, _, _ = graded
    dropped, root = _student(home, "out-dropped"), _student(home, "out-root")
    found = {mode: _found(student) for mode, student in (("dropped", dropped), ("root", root))}
    assert found["root"].pop("write_home") == "PermissionError"  # that empty folder is root's in root mode
    found["dropped"].pop("write_home")
    assert found["dropped"] == found["root"]
    assert dropped["score"] == root["score"] and dropped["score"] > 0
    assert [(t["id"], t["status"], t["score"]) for t in dropped["tasks"]] == \
        [(t["id"], t["status"], t["score"]) for t in root["tasks"]]
    assert next(t for t in dropped["tasks"] if t["id"] == "2a")["status"] == "passed"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"), reason="a seccomp filter for x86-64 and arm64")
def test_where_neither_sandbox_starts_grade_refuses_loudly_and_grades_nobody(graded):
    """Docker's default: no CAP_SYS_ADMIN, and seccomp refuses new user namespaces.  Exit 2, what both sandboxes
    said and the docker flags that fix one, on the terminal and in grader.log; no student code run, no result."""
    home, _, _ = graded
    mark = home / "ran"
    student = home / "subs-neither" / "ann"
    student.mkdir(parents=True)
    (student / "nb.py").write_text(f"# %%\nopen({str(mark)!r}, 'w').write('ran')\n")
    shutil.copy(ROOT / "submissions" / "tutorial6" / "bob" / "2a.h5", student)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GRADER_SECRET": SECRET, "TMPDIR": str(home),
           "LANG": "C.UTF-8", "COLUMNS": "250"}
    done = subprocess.run([*DOCKER_DEFAULT, str(home / "env" / "bin" / "python"), "-m",
                           "grader.cli", "grade", str(student.parent), "-a", str(TUTORIAL6), "-o",
                           str(home / "out-neither")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, said[-3000:]
    log = " ".join((home / "out-neither" / "grader.log").read_text().split())
    for words in ("NO SANDBOX", "neither sandbox of root starts", "Creating new namespace failed",
                  "No permissions to create new namespace", "docker run --cap-add SYS_ADMIN --security-opt "
                  "seccomp=unconfined --security-opt apparmor=unconfined", "1 submission(s) hold notebooks or scripts"):
        assert words in said and words in log, words
    assert "non-root user is enough" not in said  # an ordinary user's sandbox does not start here either
    assert not (home / "out-neither" / "results.json").exists()  # nobody graded, so nobody a silent zero
    assert not mark.exists()


def test_where_uid_65534_cannot_reach_the_python_the_probe_names_the_folder(graded):
    """A Python in a folder of mode 700 (as under /root: pyenv, uv's default): uid 65534's sandbox cannot bind it."""
    home, _, _ = graded
    locked = home / "locked"
    locked.mkdir(mode=0o700)
    shutil.copytree(home / "env", locked / "env", symlinks=True)
    done = subprocess.run([*NO_SYS_ADMIN, str(locked / "env" / "bin" / "python"), "-c", PROVE], cwd="/",
                          env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(home), "TMPDIR": str(home)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    said, mode = done.stdout.strip().rsplit("\n", 1)
    said = " ".join(said.split())
    assert mode == "none"
    assert "neither sandbox of root starts" in said and "Creating new namespace failed" in said
    assert f"uid 65534 cannot reach the grader's Python: {locked} (mode 700) lies above it" in said
    assert f"chmod o+x {locked}" in said and "--cap-add SYS_ADMIN" in said
