"""Hostile submissions, third round: what a student could do to the machine the class is graded on.

Each case is its own hostile submission run by the real parts (bubblewrap sandbox, evaluation worker, Keras'
loader), as root and, where the sandbox differs, as an unprivileged TA.  Assertions are on what was refused
and what was written, never on time.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from conftest import TEST_SECRET, TUTORIAL6, needs_sandbox, small_model
from grader.execute.sandbox import bwrap_path

UNPRIVILEGED_UID = 4242

# -- a .keras archive that Keras' loader would unpack to disk ---------------------------------------------------


def _extraction_bomb(path: Path, members: int = 3, megabytes: int = 40) -> None:
    """A real model saved as .keras, with ``members`` extra members of ``megabytes`` of zeros each (each stored in
    about 1/1000 of its size): Keras' loader extracts every member of an archive of more than three files to a
    temporary folder, and checks a member's expansion only above 256 MiB."""
    small_model().save(path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for i in range(members):
            with z.open(f"assets/filler{i}", "w", force_zip64=True) as f:
                for _ in range(megabytes):
                    f.write(b"\0" * 2**20)


def _bytes_under(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def test_a_keras_archive_that_unpacks_to_megabytes_is_refused_before_anything_is_extracted(assignment, tmp_path,
                                                                                          monkeypatch):
    """Hostile: a 2a.keras of a few hundred KB whose extra members unpack to 120 MB.  Keras' loader, run by the
    evaluation worker outside the sandbox, extracted them all to the worker's /tmp (a 200 MB submission of such
    files: 200 GB of the grader's disk).  The worker now refuses the archive from its directory, and writes
    nothing."""
    from grader.errors import CorruptModel
    from grader.evaluate import Evaluator, dataset_seeds

    bomb = tmp_path / "2a.keras"
    _extraction_bomb(bomb)
    assert bomb.stat().st_size < 2 * 2**20  # the premise: small on disk, 120 MB unpacked
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(worker_tmp))  # the spawned worker's temporary folder
    # (the spawned worker reads TMPDIR afresh; this process's cached folder is put back after the test, or every
    # later test of the process made its temporary folders here: test_postgres's server could not enter them)
    monkeypatch.setattr(tempfile, "tempdir", None)
    small_model().save(tmp_path / "ok.keras")
    with Evaluator(assignment, dataset_seeds(assignment, TEST_SECRET)) as ev:
        with pytest.raises(CorruptModel, match="files a Keras model does not have") as refused:
            ev.evaluate(bomb)
        assert "assets/filler0" in refused.value.message
        assert _bytes_under(worker_tmp) < 2**20, "the archive's members were unpacked"
        assert ev.evaluate(tmp_path / "ok.keras").info.inputs == 2  # a plain .keras still loads


def test_a_keras_archive_whose_weights_unpack_past_any_course_model_is_refused(tmp_path):
    """Hostile: model.weights.h5 padded to 40 MB of zeros (about 40 KB stored): Keras reads it whole into memory
    (it checks only members over 4 GiB).  Refused by its declared size, before it is decompressed."""
    from grader import keras_io
    from grader.errors import CorruptModel
    from grader.intake.formats import KERAS_ZIP

    plain = tmp_path / "plain.keras"
    small_model().save(plain)
    padded = tmp_path / "2a.keras"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(padded, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, data + b"\0" * (40 * 2**20) if info.filename == "model.weights.h5" else data)
    assert padded.stat().st_size < 2**20
    assert keras_io.read_config(plain, KERAS_ZIP, max_parameters=1000)["config"]  # the model itself is fine
    with pytest.raises(CorruptModel, match="unpacks to more than"):
        keras_io.read_config(padded, KERAS_ZIP, max_parameters=1000)


# -- bubblewrap's own unbounded tmpfs -----------------------------------------------------------------------------

#: a student's script: tries to write a file in every folder of the sandbox it can name, and says which it could
HOSTILE_WRITER = r"""
import json, os
written = {}
for folder in ("/dev/shm", "/dev", "/", "/etc", "/home", "/tmp", "/home/student"):
    try:
        with open(os.path.join(folder, "hostile-fill"), "wb") as f:
            f.write(b"x" * 2**20)  # a real run would go on until the machine's memory is gone
        written[folder] = True
    except OSError as e:
        written[folder] = e.strerror
print(json.dumps(written))
"""


def _writes(sandbox_cmd: list[str], env: dict, as_uid: int | None = None) -> dict:
    prefix = ["setpriv", f"--reuid={as_uid}", f"--regid={as_uid}", "--clear-groups"] if as_uid is not None else []
    done = subprocess.run(prefix + sandbox_cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check_writes(written: dict, home: str) -> None:
    # the bounded folders: the work folder (the quota), /tmp and /dev/shm (size-capped tmpfs of their own, 5a5343d)
    assert written[home] is True and written["/tmp"] is True and written["/dev/shm"] is True, written
    for folder in ("/dev", "/", "/etc", "/home"):
        assert written[folder] is not True, f"the code wrote into {folder}, a tmpfs of half the RAM: {written}"


@needs_sandbox
def test_student_code_cannot_fill_the_sandboxes_own_tmpfs_as_root(tmp_path):
    """Hostile: a script writes into /dev and / (bubblewrap's own tmpfs, each half the machine's RAM, bounded by no
    quota; /dev/shm is now a size-capped tmpfs of its own).  As root the sandbox user never owned them; they are
    now read-only as well."""
    from grader.execute.sandbox import Limits, Sandbox, isolation_mode

    if os.geteuid() != 0 or isolation_mode() != "root":
        pytest.skip("the root sandbox needs the grader to run as root")
    sandbox = Sandbox(tmp_path / "work", tmp_path / "runtime", Limits())
    sandbox.prepare()
    cmd, env = sandbox.wrap([sys.executable, "-c", HOSTILE_WRITER], {})
    try:
        _check_writes(_writes(cmd, env), "/home/student")
    finally:
        sandbox.cleanup()


@needs_sandbox
def test_student_code_cannot_fill_the_sandboxes_own_tmpfs_unprivileged(tmp_path):
    """The same script, graded by an unprivileged TA (user namespaces): there the code owned bubblewrap's root
    and /dev tmpfs (with /dev/shm) and wrote into them freely (no cgroup, no quota: ``RLIMIT_FSIZE`` bounds one
    file, not how many), so one student could take half the machine's memory from the class.  Now they are
    read-only."""
    from grader.execute.sandbox import Limits, Sandbox, bwrap_path

    if os.geteuid() != 0:
        pytest.skip("needs root to become an unprivileged uid")
    uid = UNPRIVILEGED_UID
    probe = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", bwrap_path(),
                            "--unshare-user", "--disable-userns", "--ro-bind", "/", "/", "--", "/bin/true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unprivileged user namespaces are not available here: {probe.stderr.decode()[:200]}")
    python = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no Python the unprivileged user can run")
    home = Path(tempfile.mkdtemp(prefix="grader-ta-", dir="/tmp"))  # a folder the TA's uid can reach
    try:
        sandbox = Sandbox(home / "work", home / "runtime", Limits(), mode="user",
                          python_paths=[str(Path(python).resolve().parent)])
        sandbox.prepare()
        subprocess.run(["chown", "-R", f"{uid}:{uid}", str(home)], check=True)
        cmd, env = sandbox.wrap([python, "-I", "-c", HOSTILE_WRITER], {})
        _check_writes(_writes(cmd, env, as_uid=uid), "/home/student")
    finally:
        shutil.rmtree(home, ignore_errors=True)


# -- text that makes the grader's own pattern matching quadratic ---------------------------------------------------
# Each of these ran in the grader's process, outside the sandbox and every time limit of the student's: a few MB of
# text held a batch worker for hours.  The guards below are hang guards only: fixed, each takes about a second.

HANG_GUARD_S = 300

#: a line the Keras 2 scan read: ``re.sub(r"\s+#[^'\"]*$")`` backtracked over the rest of it from every blank
COMMENT_BOMB = "x = 1" + " #" * 600_000 + "'"
#: a failing cell's source, searched by the plain-words rules' ``Shapes .* are incompatible`` from every "Shapes"
SHAPES_BOMB = "raise ValueError('boom')  # " + "Shapes " * 300_000
#: a helper script that does not parse: its imports read by ``^\s*(?:from|import)`` from every line start
BLANK_LINES_BOMB = "\n" * 1_000_000 + "("


def _in_a_process(code: str) -> str:
    """Run ``code`` in a fresh Python that imports the grader (the hang guard: a subprocess can be stopped)."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          timeout=HANG_GUARD_S, env={**os.environ, "PYTHONPATH": f"{root}:{root / 'tests'}"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_line_of_many_comment_marks_does_not_hold_the_keras2_scan():
    """Hostile: a 1.2 MB line of ``' #'`` ending in a quote: the Keras 2 scan's comment stripping took hours."""
    out = _in_a_process(
        "import nbformat\n"
        "from grader.execute import keras2\n"
        "from test_hostile_3 import COMMENT_BOMB\n"
        "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(COMMENT_BOMB)])\n"
        "print(bool(keras2.scan(nb)), keras2.graph_mode_note(nb, 'nb.ipynb'))\n")
    assert out.split() == ["False", "None"]


def test_the_comment_stripping_is_the_patterns():
    """The linear stripping gives what the pattern gave (``re.sub(r"\\s+#[^'\"]*$", "", line)``)."""
    import random
    import re

    from grader.execute.keras2 import _without_comment

    rng = random.Random(0)
    for _ in range(20_000):
        line = "".join(rng.choice(" #'\"ax\t\u00a0") for _ in range(rng.randint(0, 12)))
        assert _without_comment(line) == re.sub(r"\s+#[^'\"]*$", "", line), repr(line)
    assert _without_comment("model.save('m') # save 'it'") == "model.save('m') # save 'it'"
    assert _without_comment("Adam(lr=0.1)  # old") == "Adam(lr=0.1)"


def test_a_failing_cell_of_many_shapes_is_explained_in_plain_words():
    """Hostile: a failing cell whose source repeats "Shapes " 300,000 times: the plain-words rule searched it
    quadratically.  Now explained at once, by its own error."""
    out = _in_a_process(
        "from grader.execute import diagnose\n"
        "from grader.execute.runner import CellRun\n"
        "from test_hostile_3 import SHAPES_BOMB\n"
        "print(diagnose.explain(CellRun(1, SHAPES_BOMB, 'error', 'ValueError', 'boom', 'tb')))\n")
    assert "ValueError: boom" in out


def test_a_helper_script_of_blank_lines_does_not_hold_intake():
    """Hostile: a helper script of a million blank lines that does not parse: reading its imports took hours."""
    out = _in_a_process(
        "from grader.intake import formats\n"
        "from test_hostile_3 import BLANK_LINES_BOMB\n"
        "print(sorted(formats.imported_modules(BLANK_LINES_BOMB + '\\nimport tools\\n(')))\n")
    assert out.strip() == "['tools']"


@needs_sandbox
def test_the_class_is_graded_beside_a_notebook_of_pattern_bombs(tmp_path, model_dir):
    """The three in one student's hand-in (a notebook and a helper script), graded with ``-j 2`` beside a
    classmate: the batch finishes (the timeout is a hang guard), the classmate is graded, the hostile student gets
    plain words for the failing cell."""
    import nbformat

    subs = tmp_path / "subs"
    (subs / "bomber").mkdir(parents=True)
    # the failing cell calls a function, its bomb many lines below the call: its traceback stays short
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("def boom():\n    raise ValueError('boom')\n" + COMMENT_BOMB),
        nbformat.v4.new_code_cell("boom()\n" + "pass\n" * 40 + SHAPES_BOMB)])
    nbformat.write(nb, subs / "bomber" / "work.ipynb")
    (subs / "bomber" / "helpers.py").write_text(BLANK_LINES_BOMB)
    (subs / "good").mkdir()
    shutil.copy(model_dir / "2a.h5", subs / "good" / "2a.h5")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "GRADER_SECRET": TEST_SECRET, "KERAS_BACKEND": "jax", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(subs), "-a", str(root / "reference" /
                           "tutorial6"), "-o", str(tmp_path / "out"), "--workers", "2"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    students = {s["id"]: s for s in json.loads((tmp_path / "out" / "results.json").read_text())["students"]}
    assert next(t for t in students["good"]["tasks"] if t["id"] == "2a")["status"] == "passed"
    notebook = next(n for n in students["bomber"]["notebooks"] if n["name"].endswith("work.ipynb"))
    failure = next(f for f in notebook["failures"] if f["cell"] == 2)
    assert failure["error"] == "ValueError" and "boom" in failure["explanation"], failure


# -- files the disk quota did not count ----------------------------------------------------------------------------

#: a student's script: 8 MB into the kernel's runtime folder (its ipc sockets' folder, writable; its path is the
#: connection file's, which the kernel's command line names)
UNCOUNTED_WRITER = r"""
import os, sys
for name in ("fill-1", "fill-2"):  # each within the largest file the code may write (6 MB here)
    with open(os.path.join(sys.argv[1], name), "wb") as f:
        f.write(b"x" * 4 * 2**20)
print("written")
"""


@needs_sandbox
def test_files_in_the_kernels_runtime_folder_count_against_the_disk_quota(tmp_path):
    """Hostile: the quota (the runner's watchdog, ``Sandbox.over_quota``) walked the work and capture folders but not
    the kernel's runtime folder, which the code can write (its sockets live there): files there went onto the
    grader's disk without bound.  It counts now."""
    from grader.execute.sandbox import Limits, Sandbox

    sandbox = Sandbox(tmp_path / "work", tmp_path / "runtime", Limits(disk_mb=6), shared_dirs=(tmp_path / "capture",))
    sandbox.prepare()
    try:
        assert sandbox.over_quota() is None
        cmd, env = sandbox.wrap([sys.executable, "-c", UNCOUNTED_WRITER, str(tmp_path / "runtime")],
                                {"HOME": "/home/student"})
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.stdout.strip() == "written", done.stderr[-2000:]
        why = sandbox.over_quota()
        assert why is not None and "6 MB" in why, why  # 8 MB written, 6 MB allowed
    finally:
        sandbox.cleanup()


@needs_sandbox
def test_a_folder_nested_past_the_walks_depth_is_itself_over_the_quota(tmp_path):
    """Hostile: the quota's walk looks 64 folders deep, so what lay deeper went uncounted, without bound: the
    nesting itself is now over the quota."""
    from grader.execute.sandbox import Limits, Sandbox

    sandbox = Sandbox(tmp_path / "work", tmp_path / "runtime", Limits())
    sandbox.prepare()
    try:
        cmd, env = sandbox.wrap([sys.executable, "-c", "import os; os.makedirs(os.path.join(*['d'] * 70))"], {})
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        why = sandbox.over_quota()
        assert why is not None and "deep" in why, why
    finally:
        sandbox.cleanup()


@needs_sandbox
def test_a_notebook_filling_the_kernels_runtime_folder_is_stopped_at_the_quota(tmp_path, model_dir):
    """The same, as a notebook graded beside a classmate: the cell that fills the runtime folder (found from the
    kernel's own connection information) is stopped at the 16 MB quota with a plain message; the classmate is
    graded."""
    import nbformat

    from grader.pipeline import grade_batch

    spec = tmp_path / "spec"
    shutil.copytree(TUTORIAL6, spec)
    toml = spec / "assignment.toml"
    text = toml.read_text()
    assert "memory_mb = 4096\nmax_output_kb = 64" in text
    toml.write_text(text.replace("memory_mb = 4096\nmax_output_kb = 64",
                                 "memory_mb = 4096\nmax_output_kb = 64\ndisk_mb = 16"))
    subs = tmp_path / "subs"
    (subs / "filler").mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import json, os\n"
        "from ipykernel.connect import get_connection_info\n"
        "runtime = os.path.dirname(json.loads(get_connection_info())['ip'])\n"
        "for i in range(3):\n"
        "    with open(os.path.join(runtime, f'fill-{i}'), 'wb') as f:\n"
        "        f.write(b'x' * 8 * 2**20)\n"
        "print('wrote 24 MB into', runtime)"), nbformat.v4.new_code_cell("print('after')")])
    nbformat.write(nb, subs / "filler" / "work.ipynb")
    (subs / "good").mkdir()
    shutil.copy(model_dir / "2a.h5", subs / "good" / "2a.h5")
    grade_batch(subs, spec, tmp_path / "out")
    students = {s["id"]: s for s in json.loads((tmp_path / "out" / "results.json").read_text())["students"]}
    assert next(t for t in students["good"]["tasks"] if t["id"] == "2a")["status"] == "passed"
    failures = {f["cell"]: f for f in students["filler"]["notebooks"][0]["failures"]}
    assert failures[1]["status"] == "quota" and "disk quota of 16 MB" in failures[1]["explanation"], failures


# -- thousands of failing cells -------------------------------------------------------------------------------------

@needs_sandbox
def test_a_script_of_hundreds_of_failing_cells_lists_only_the_first(assignment, evaluator, tmp_path):
    """Hostile: a script of 300 one-line cells that each raise.  Every failure was listed with its explanation, its
    traceback (up to 2 KB) and its lines: a 6 MB notebook of such cells, within the notebook's time, made tens of
    MB of one student's results, rewritten into results.json every few seconds.  Now the first
    ``MAX_LISTED_FAILURES`` are listed, and a note counts the rest."""
    from conftest import grade_one
    from grader.execute import MAX_LISTED_FAILURES

    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    (folder / "work.py").write_text("".join(f"# %%\nraise ValueError('cell {i}')\n" for i in range(300)))
    result = grade_one(assignment, evaluator, tmp_path / "subs")
    (nb,) = result.notebooks
    assert len(nb["failures"]) == MAX_LISTED_FAILURES < 300
    assert [f["cell"] for f in nb["failures"]] == list(range(1, MAX_LISTED_FAILURES + 1))
    assert nb["failures"][0]["error"] == "ValueError"
    notes = " ".join(nb.get("notes", []) + result.notes)
    assert f"300 cells failed or were not run; the first {MAX_LISTED_FAILURES} are listed" in notes, notes


#: a student's script: a folder it may write into but not list (mode 0o300), and 3 MB in it
HIDDEN_WRITER = r"""
import os
os.mkdir("/home/student/hidden")
for name in ("fill-1", "fill-2"):  # each within the largest file the code may write (2 MB here)
    with open(os.path.join("/home/student/hidden", name), "wb") as f:
        f.write(b"x" * 3 * 2**19)
os.chmod("/home/student/hidden", 0o300)
print("written")
"""


@needs_sandbox
def test_a_folder_the_grader_cannot_list_is_over_the_quota_unprivileged(tmp_path):
    """Hostile, graded by an unprivileged TA: a folder of mode 0o300 takes the code's files (write and search
    suffice) but the quota's walk, running as the TA who owns it outside, cannot list it, and counted nothing in
    it: files there went onto the grader's disk without bound.  Such a folder is now itself over the quota (as
    root the walk reads it anyway)."""
    from grader.execute.sandbox import Limits, Sandbox

    uid = UNPRIVILEGED_UID
    if os.geteuid() != 0:
        pytest.skip("needs root to become an unprivileged uid")
    python = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    probe = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", bwrap_path(),
                            "--unshare-user", "--disable-userns", "--ro-bind", "/", "/", "--", "/bin/true"],
                           capture_output=True)
    if probe.returncode != 0 or python is None:
        pytest.skip("unprivileged user namespaces (or a Python the uid can run) are not available here")
    home = Path(tempfile.mkdtemp(prefix="grader-ta-", dir="/tmp"))
    try:
        sandbox = Sandbox(home / "work", home / "runtime", Limits(disk_mb=2), mode="user",
                          python_paths=[str(Path(python).resolve().parent)])
        sandbox.prepare()
        subprocess.run(["chown", "-R", f"{uid}:{uid}", str(home)], check=True)
        cmd, env = sandbox.wrap([python, "-I", "-c", HIDDEN_WRITER], {})
        done = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] + cmd, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.stdout.strip() == "written", done.stderr[-2000:]
        assert _over_quota_as(uid, str(home / "work"), str(home / "runtime"), 2) == \
            "the notebook made a folder the grader cannot read (hidden)"
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(home)], check=False)
        shutil.rmtree(home, ignore_errors=True)


def _over_quota_as(uid: int, work: str, runtime: str, disk_mb: int) -> str:
    """``Sandbox.over_quota`` as ``uid`` sees it (the unprivileged grader's own walk), in a spawned process (a fork
    of this one, which runs JAX's threads, could deadlock)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_over_quota_in_child, (uid, work, runtime, disk_mb))


def _over_quota_in_child(uid: int, work: str, runtime: str, disk_mb: int) -> str:
    from grader.execute.sandbox import Limits, Sandbox

    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    return str(Sandbox(Path(work), Path(runtime), Limits(disk_mb=disk_mb), mode="user",
                       python_paths=["/usr"]).over_quota())


# -- memory without a cgroup ------------------------------------------------------------------------------------------

OOM_PROBE = "print(open('/proc/self/oom_score_adj').read().strip())"


@needs_sandbox
def test_student_code_is_the_out_of_memory_killers_first_choice_unprivileged(tmp_path):
    """Hostile, graded by an unprivileged TA: no memory cgroup caps the sandbox's tree (RLIMIT_DATA caps each
    process, not how many), so a notebook forking processes that fill the machine's memory left the choice of a
    victim to the machine's OOM killer, which could take the grader's evaluation worker or a classmate's kernel.
    Student code now runs at the highest ``oom_score_adj`` (1000): its own processes are killed first."""
    from grader.execute.sandbox import Limits, Sandbox

    uid = UNPRIVILEGED_UID
    if os.geteuid() != 0 or not shutil.which("choom"):
        pytest.skip("needs root to become an unprivileged uid, and util-linux's choom")
    python = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    probe = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", bwrap_path(),
                            "--unshare-user", "--disable-userns", "--ro-bind", "/", "/", "--", "/bin/true"],
                           capture_output=True)
    if probe.returncode != 0 or python is None:
        pytest.skip("unprivileged user namespaces (or a Python the uid can run) are not available here")
    home = Path(tempfile.mkdtemp(prefix="grader-ta-", dir="/tmp"))
    try:
        sandbox = Sandbox(home / "work", home / "runtime", Limits(), mode="user",
                          python_paths=[str(Path(python).resolve().parent)])
        sandbox.prepare()
        subprocess.run(["chown", "-R", f"{uid}:{uid}", str(home)], check=True)
        cmd, env = sandbox.wrap([python, "-I", "-c", OOM_PROBE], {})
        done = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] + cmd, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.stdout.strip() == "1000", done.stderr[-2000:]
    finally:
        shutil.rmtree(home, ignore_errors=True)


@needs_sandbox
def test_student_code_is_the_out_of_memory_killers_first_choice_as_root(tmp_path):
    """The same as root, where a memory cgroup caps the tree too (a machine-wide shortage still picks it first)."""
    from grader.execute.sandbox import Limits, Sandbox, isolation_mode

    if os.geteuid() != 0 or isolation_mode() != "root" or not shutil.which("choom"):
        pytest.skip("the root sandbox needs the grader to run as root, and util-linux's choom")
    sandbox = Sandbox(tmp_path / "work", tmp_path / "runtime", Limits())
    sandbox.prepare()
    try:
        cmd, env = sandbox.wrap([sys.executable, "-c", OOM_PROBE], {})
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.stdout.strip() == "1000", done.stderr[-2000:]
    finally:
        sandbox.cleanup()


# -- a zip archive of a million entries ---------------------------------------------------------------------------

def test_an_archive_listing_thousands_of_entries_is_not_read_entry_by_entry(assignment, evaluator, tmp_path):
    """Hostile: a 2a.keras listing 100,000 empty entries (beside a config.json).  ``zipfile`` reads every entry of
    the central directory before anything else, in the grader's own process, at each look at the file (a
    million entries: 7 s and 545 MB).  The format check now reads the archive's end record first: more entries
    than a model's archive has, and it is no model file; the student is told, the batch goes on."""
    from conftest import grade_one
    from grader.intake.formats import KERAS_ZIP, MAX_ZIP_ENTRIES, UNKNOWN, sniff_format

    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "2a.keras", "w", zipfile.ZIP_STORED) as z:
        z.writestr("config.json", "{}")
        for i in range(100_000):
            z.writestr(zipfile.ZipInfo(f"{i:x}"), b"")
    plain = tmp_path / "plain.keras"
    small_model().save(plain)
    assert sniff_format(plain) == KERAS_ZIP  # a model's archive: three entries
    assert 100_000 > MAX_ZIP_ENTRIES and sniff_format(folder / "2a.keras") == UNKNOWN
    result = grade_one(assignment, evaluator, tmp_path / "subs")
    (f,) = [f for f in result.files if f.name.endswith("2a.keras")]
    assert f.outcome != "graded" and f.message, f


def test_a_failing_line_of_megabytes_is_quoted_cut():
    """Hostile: a raising cell whose failing line (and the lines around it) are a megabyte each: the failure
    quoted them whole in the student's results.  Each quoted line is now cut at ``MAX_EXCERPT_LINE``."""
    from grader.execute import MAX_EXCERPT_LINE, _excerpt

    long = "x = 1  # " + "y" * 2**20
    source = "\n".join([long, long, "raise ValueError('boom')  # " + "z" * 2**20, long, long])
    traceback = "Cell In[1], line 3\n----> 3 raise ValueError('boom')"
    excerpt = _excerpt(source, traceback)
    assert "-> " in excerpt and "raise ValueError('boom')" in excerpt  # still the failing line, marked
    assert len(excerpt) < 6 * (MAX_EXCERPT_LINE + 20), len(excerpt)
    assert len(_excerpt(source)) < 6 * (MAX_EXCERPT_LINE + 20)  # the cell's first lines, when the traceback is mute


#: a failing cell's error message (up to the kernel message's 1 MB): the Keras 2 re-run's rule searched it with
#: ``Unrecognized keyword arguments.*'(output_dim|init)'`` from every occurrence (12 s a cell, for every cell)
KEYWORDS_BOMB = "Unrecognized keyword arguments " * 33_000


def test_failing_cells_whose_errors_repeat_a_keras2_phrase_do_not_hold_the_grader():
    """Hostile: cells that raise with a 1 MB message repeating "Unrecognized keyword arguments": whether Keras 2
    explains a Keras 3 run's failures was searched quadratically in each.  Now at once (a hang guard only)."""
    out = _in_a_process(
        "from grader.execute import keras2\n"
        "from grader.execute.runner import CellRun\n"
        "from test_hostile_3 import KEYWORDS_BOMB\n"
        "cells = [CellRun(i, '1/0', 'error', 'TypeError', KEYWORDS_BOMB[:500], KEYWORDS_BOMB) for i in range(60)]\n"
        "print(keras2.explains(cells))\n")
    assert out.strip() == "None"
