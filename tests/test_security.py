"""Nothing in a submission reaches a secret, a classmate's work, or the rest of the batch.

One class of hostile students, graded in one real batch beside a good one, each with its own
hostile submission: links to the secret, the gradebook, /etc/shadow and a root-only folder;
captures swapped for links and pipes after the fact; a notebook nested deep enough to exhaust
the recursion limit and links that make a folder a cycle; a run that fills its disk, its /tmp,
and hands in a link to /dev/zero and hundreds of files.  Every one ends in a message for that
student, the good student's grade is unchanged, and no output of the batch holds a secret.
"""
import json
import re
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TEST_SECRET, TUTORIAL6, needs_sandbox, small_model
from grader.execute.sandbox import bwrap_path, isolation_mode

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make root-only files and switch users")

ROOT_ONLY_TEXT = "ROOT-ONLY-CONTENT-3141"


def script(*cells: str) -> str:
    return "".join(f"# %%\n{c}\n" for c in cells)


def _probe(names) -> str:
    """A cell that reads each file and raises with what it read: a leak would be in the report."""
    return ("found = {}\nfor n in %r:\n    try:\n        found[n] = open(n, 'rb').read(300)\n"
            "    except Exception as e:\n        found[n] = repr(e)\nraise RuntimeError(repr(found))" % (list(names),))


@pytest.fixture(scope="module")
def hostile_class(tmp_path_factory, model_dir):
    base = tmp_path_factory.mktemp("hostile")
    spec = base / "assignment"
    shutil.copytree(TUTORIAL6, spec)
    toml = spec / "assignment.toml"
    text = toml.read_text().replace("memory_mb = 4096\nmax_output_kb = 64",
                                    "memory_mb = 4096\nmax_output_kb = 64\ndisk_mb = 16\ntmp_mb = 16")
    text = re.sub(r"\ncell_timeout_s = \d+", "\ncell_timeout_s = 120", text)
    toml.write_text(text + "\n[intake]\nmax_files = 60\n")
    out = base / "out"
    subs = base / "subs"
    root_only = base / "root-only"
    root_only.mkdir(mode=0o700)
    (root_only / "note.txt").write_text(ROOT_ONLY_TEXT)

    good = subs / "good"
    good.mkdir(parents=True)
    shutil.copy(model_dir / "2a.h5", good / "2a.h5")

    linker = subs / "linker"
    linker.mkdir()
    links = {"environ": "/proc/self/environ", "secret": str(out / ".grader-secret"),
             "gradebook": str(out / "gradebook.sqlite"), "shadow": "/etc/shadow",
             "rootdir": str(root_only), "classmate.h5": str(good / "2a.h5")}
    for name, target in links.items():
        os.symlink(target, linker / name)
    (linker / "probe.py").write_text(script(_probe(["environ", "secret", "gradebook", "shadow", "rootdir/note.txt",
                                                   "classmate.h5", str(good / "2a.h5"),
                                                   str(root_only / "note.txt"), "/proc/1/environ"])))

    swapper = subs / "swapper"
    swapper.mkdir()
    (swapper / "swap.py").write_text(script(
        "import glob, os\nimport numpy as np\nimport keras\n"
        "models = [keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation='relu'),"
        " keras.layers.Dense(2, activation='softmax')]) for _ in range(2)]\n"
        "for m in models:\n    m.predict(np.zeros((3, 2)), verbose=0)\n"
        "caps = sorted(glob.glob(os.environ['GRADER_CAPTURE_DIR'] + '/capture-*.keras'))\n"
        "os.remove(caps[0]); os.symlink(%r, caps[0])\n"
        "os.remove(caps[1]); os.mkfifo(caps[1])" % str(good / "2a.h5")))

    deep = subs / "deep"
    deep.mkdir()
    depth = 200_000
    (deep / "deep.ipynb").write_text('{"a": ' * depth + "1" + "}" * depth)
    os.symlink(".", deep / "a")
    os.symlink(".", deep / "b")

    filler = subs / "filler"
    filler.mkdir()
    (filler / "a_fill.py").write_text(script(
        "import errno\ntry:\n    for i in range(8):\n        with open(f'/tmp/big{i}', 'wb') as f:\n"
        "            f.write(b'x' * (4 * 2**20))\n    raise AssertionError('/tmp took 32 MB')\n"
        "except OSError as e:\n    assert e.errno == errno.ENOSPC, e",
        "block = b'y' * 2**20\nfor i in range(64):\n    with open(f'junk{i}.bin', 'wb') as f:\n        f.write(block)",
        "print('after the quota')"))
    os.symlink("/dev/zero", filler / "x.ipynb")
    for i in range(100):
        (filler / f"z{i:03d}.txt").write_text("filler")

    from grader.pipeline import grade_batch

    env = {k: os.environ.pop(k) for k in ("GRADER_SECRET",) if k in os.environ}
    try:
        summary = grade_batch(subs, spec, out, workers=2)
    finally:
        os.environ.update(env)
    from grader.api import export_gradebook

    export_gradebook(out)  # every export format, into out/export: grepped with the rest
    results = {s["id"]: s for s in json.loads((out / "results.json").read_text())["students"]}
    return {"out": out, "results": results, "summary": summary, "secret": (out / ".grader-secret").read_text().strip()}


def _task(student, tid):
    return next(t for t in student["tasks"] if t["id"] == tid)


def _text(student) -> str:
    return json.dumps(student)


def _every_output(out: Path) -> str:
    """Every byte the batch wrote that a person or a program reads (pages, results.json, the log, every
    export), the gradebook's measurements decompressed."""
    from grader.store import codec

    parts = []
    for path in out.rglob("*"):
        if path.is_file() and path.name not in ("gradebook.sqlite", ".grader-secret"):
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    with sqlite3.connect(out / "gradebook.sqlite") as db:
        parts += [r[0] for r in db.execute("SELECT result FROM results")]
        parts += [json.dumps(codec.decode(r[0]), default=lambda o: str(getattr(o, "tolist", lambda: o)()))
                  for r in db.execute("SELECT measurements FROM submissions")]
        parts += [r[0] for r in db.execute("SELECT message FROM task_results")]
    return "\n".join(parts)


@needs_sandbox
def test_the_good_student_is_graded_and_the_batch_finishes(hostile_class):
    r = hostile_class["results"]
    assert set(r) == {"good", "linker", "swapper", "deep", "filler"}
    assert _task(r["good"], "2a")["status"] == "passed"
    assert hostile_class["summary"].counts["measured"] == 5


@needs_sandbox
def test_links_are_never_followed_and_no_output_holds_a_secret(hostile_class):
    linker = hostile_class["results"]["linker"]
    notes = " ".join(linker["notes"])
    for name in ("environ", "secret", "gradebook", "shadow", "rootdir", "classmate.h5"):
        assert f"{name}: a symbolic link (links are never followed)" in notes
    failure = linker["notebooks"][0]["failures"][0]
    assert failure["error"] == "RuntimeError"  # the probe ran, and found nothing it could read
    everything = _every_output(hostile_class["out"])
    assert (hostile_class["out"] / "export" / "grades.csv").is_file() and "linker" in everything
    assert hostile_class["secret"] not in everything
    assert TEST_SECRET not in everything
    assert ROOT_ONLY_TEXT not in everything
    assert "SQLite format" not in everything
    if os.access("/etc/shadow", os.R_OK):
        assert Path("/etc/shadow").read_text().splitlines()[0] not in everything
    assert "HDF" not in failure["explanation"]  # the classmate's model was not readable either


@needs_sandbox
def test_captures_swapped_for_links_or_pipes_are_refused(hostile_class):
    swapper = hostile_class["results"]["swapper"]
    notes = " ".join(swapper["notes"])
    assert "was not graded: its file is a symbolic link" in notes
    assert "was not graded: its file is a named pipe" in notes
    assert _task(swapper, "2a")["status"] != "passed"
    assert "good" not in " ".join(t["source"] or "" for t in swapper["tasks"])


@needs_sandbox
def test_a_deeply_nested_notebook_and_a_link_cycle_fail_that_student_only(hostile_class):
    deep = hostile_class["results"]["deep"]
    text = _text(deep)
    assert "a: a symbolic link" in text and "b: a symbolic link" in text
    message = next(f["message"] for f in deep["files"] if f["name"] == "deep.ipynb")
    assert "not a valid notebook" in message or "cannot be read" in message


@needs_sandbox
def test_disk_tmp_and_file_count_quotas_end_with_messages(hostile_class):
    filler = hostile_class["results"]["filler"]
    nb = filler["notebooks"][0]
    failures = {f["cell"]: f for f in nb["failures"]}
    assert failures[2]["status"] == "quota" and "disk quota of 16 MB" in failures[2]["explanation"]
    assert failures[3]["status"] == "skipped"  # after the quota, nothing more runs
    notes = " ".join(filler["notes"])
    assert "x.ipynb: a symbolic link" in notes
    assert "more than 60 files and folders" in notes
    # the 32 MB write to the 16 MB /tmp failed inside the student's own cell, which went on
    assert 1 not in failures


def test_a_decompression_bomb_capture_is_not_loaded(tmp_path):
    from grader.harvest import MAX_DATA_BYTES, load_arrays

    np.savez_compressed(tmp_path / "bomb.npz", x=np.zeros(40_000_000), y=np.zeros(10))  # 320 MB of zeros
    data = (tmp_path / "bomb.npz").read_bytes()
    assert len(data) < MAX_DATA_BYTES
    assert load_arrays(data) == (None, None)
    np.savez(tmp_path / "ok.npz", x=np.ones((5, 2)), y=np.zeros(5))
    x, y = load_arrays((tmp_path / "ok.npz").read_bytes())
    assert x.shape == (5, 2) and y.shape == (5,)


def _huge_config(path, layers=10_000):
    import h5py

    small_model().save(path)
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        dense = [lay for lay in cfg["config"]["layers"] if lay["class_name"] == "Dense"][0]
        cfg["config"]["layers"] = [dict(dense, config=dict(dense["config"], name=f"d{i}")) for i in range(layers)]
        f.attrs["model_config"] = json.dumps(cfg)


def test_a_ten_thousand_layer_config_is_refused_before_keras_builds_it(evaluator, tmp_path):
    from grader.errors import ModelTooLarge

    _huge_config(tmp_path / "layers.h5")
    with pytest.raises(ModelTooLarge, match="more than 100 layers"):
        evaluator.evaluate(tmp_path / "layers.h5")


def test_one_students_files_share_one_evaluation_budget(tmp_path, model_dir):
    from grader.evaluate import Evaluator, dataset_seeds
    from grader.intake import collect
    from grader.session import GradingSession
    from grader.spec import load_assignment

    spec = tmp_path / "a"
    shutil.copytree(TUTORIAL6, spec)
    toml = spec / "assignment.toml"
    toml.write_text(toml.read_text().replace("max_parameters = 2_000_000",
                                             "max_parameters = 2_000_000\nstudent_budget_s = 0.001"))
    a = load_assignment(spec)
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    for tid in ("1a", "2a"):
        shutil.copy(model_dir / f"{tid}.h5", folder / f"{tid}.h5")
    with Evaluator(a, dataset_seeds(a, TEST_SECRET)) as ev:
        measured = GradingSession(a, ev.seeds, evaluator=ev).measure(collect(tmp_path / "subs", a)[0])
    assert measured.evaluated == []
    assert "took longer than 0 s" in measured.errors_by_task["1a"]  # each file gets at most what is left
    assert "used up the grader's evaluation time of 0 s per student" in measured.errors_by_task["2a"]


@needs_sandbox
def test_student_code_cannot_make_user_namespaces(tmp_path):
    from grader.execute.sandbox import Sandbox

    sandbox = Sandbox(tmp_path / "work", tmp_path / "runtime")
    sandbox.prepare()
    try:
        for argv, expect_ok in ((["/usr/bin/id", "-u"], True), (["unshare", "-r", "true"], False),
                                (["unshare", "-U", "true"], False)):
            cmd, env = sandbox.wrap(argv, {"PATH": "/usr/bin:/bin"})
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            assert (done.returncode == 0) == expect_ok, (argv, done.stderr)
            if argv[0] == "/usr/bin/id":
                assert done.stdout.strip() == "65534"
    finally:
        sandbox.cleanup()


@needs_sandbox
def test_multiprocessing_works_in_a_size_capped_dev_shm(tmp_path):
    """Student code may use multiprocessing (Keras 2's ``use_multiprocessing``, a Pool): its semaphores live in
    /dev/shm, a tmpfs of its own capped at ``SHM_MB`` while the rest of /dev (unbounded) stays read-only."""
    from grader.execute.sandbox import SHM_MB, Sandbox

    sandbox = Sandbox(tmp_path / "work", tmp_path / "runtime")
    sandbox.prepare()
    code = ("import multiprocessing as m, sys\n"
            "with m.Pool(2) as p: print(p.map(abs, [-1, -2]))\n"
            "try:\n    open('/dev/shm/big', 'wb').write(b'0' * ((%d + 1) * 2**20))\nexcept OSError as e: print(e.errno)\n"
            "try:\n    open('/dev/planted', 'wb')\nexcept OSError as e: print(e.errno)\n") % SHM_MB
    try:
        cmd, env = sandbox.wrap([sys.executable, "-I", "-c", code], {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    finally:
        sandbox.cleanup()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[1,", "2]", "28", "30"], done.stdout  # ENOSPC past the cap; EROFS in /dev


@needs_sandbox
def test_python_installed_under_tmp_is_visible_in_the_sandbox(tmp_path):
    """A virtual environment under /tmp must not be hidden by the sandbox's own /tmp."""
    from grader.execute.sandbox import Sandbox, _python_paths

    fake_env = Path("/tmp") / f"grader-test-venv-{os.getpid()}"
    fake_env.mkdir(exist_ok=True)
    (fake_env / "marker.txt").write_text("here")
    fake_env.chmod(0o755)
    try:
        sandbox = Sandbox(tmp_path / "work", tmp_path / "runtime", python_paths=[*_python_paths(), str(fake_env)])
        sandbox.prepare()
        cmd, env = sandbox.wrap(["cat", str(fake_env / "marker.txt")], {"PATH": "/usr/bin:/bin"})
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        sandbox.cleanup()
        assert done.stdout == "here", done.stderr
    finally:
        shutil.rmtree(fake_env)


def _measure_in(tmp_path, assignment, evaluator, monkeypatch):
    """Measure a one-cell script with scratch folders under ``tmp_path/scratch``; (measurements, scratch)."""
    import tempfile

    from grader.intake import collect
    from grader.session import GradingSession

    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    (folder / "nb.py").write_text(script("print(1)"))
    session = GradingSession(assignment, evaluator.seeds, evaluator=evaluator)
    return session.measure(collect(tmp_path / "subs", assignment)[0]), scratch_root


@needs_sandbox
def test_a_sandbox_that_cannot_be_built_says_why_and_leaves_no_scratch(assignment, evaluator, tmp_path,
                                                                       monkeypatch):
    from grader.execute import sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module, "_python_paths", lambda: ["/nonexistent-python"])
    measured, scratch = _measure_in(tmp_path, assignment, evaluator, monkeypatch)
    message = measured.files[0].message
    assert "grader's environment failing" in message and "nonexistent-python" in message  # bwrap's own words
    assert list(scratch.iterdir()) == []


@needs_sandbox
def test_a_kernel_that_cannot_start_says_why_and_leaves_no_scratch(assignment, evaluator, tmp_path, monkeypatch):
    from grader.execute.kernel import SandboxedKernelManager

    original = SandboxedKernelManager.format_kernel_cmd

    def broken(self, extra_arguments=None):  # the kernel's module is missing: it dies at start
        return [c.replace("from ipykernel.kernelapp import IPKernelApp", "import no_such_kernel_module")
                for c in original(self, extra_arguments)]

    monkeypatch.setattr(SandboxedKernelManager, "format_kernel_cmd", broken)
    measured, scratch = _measure_in(tmp_path, assignment, evaluator, monkeypatch)
    message = measured.files[0].message
    assert "kernel could not be started" in message and "No module named 'no_such_kernel_module'" in message
    assert list(scratch.iterdir()) == []


@needs_sandbox
def test_an_internal_error_keeps_its_traceback_in_the_log(tmp_path, model_dir, monkeypatch):
    from grader import pipeline

    def broken(assignment, measured):
        raise ZeroDivisionError("a grader bug")

    from grader import session

    # scoring fails where the job is graded (the session) and where the batch scores again after a failure
    monkeypatch.setattr(session, "score_student", broken)
    monkeypatch.setattr(pipeline, "score_student", broken)
    (tmp_path / "subs" / "s").mkdir(parents=True)
    shutil.copy(model_dir / "2a.h5", tmp_path / "subs" / "s" / "2a.h5")
    pipeline.grade_batch(tmp_path / "subs", TUTORIAL6, tmp_path / "out", workers=1)
    student = json.loads((tmp_path / "out" / "results.json").read_text())["students"][0]
    assert "ZeroDivisionError: a grader bug" in student["notes"][0] and "grader.log" in student["notes"][0]
    log = (tmp_path / "out" / "grader.log").read_text()
    assert "Traceback" in log and "in broken" in log
    assert (tmp_path / "out" / "grader.log").stat().st_mode & 0o777 == 0o600


@needs_sandbox
@as_root
@pytest.mark.skipif(isolation_mode() == "none", reason="no sandbox here")
def test_an_unprivileged_ta_gets_a_sandbox_that_hides_the_tas_files(request, model_dir):
    """grade run as a non-root uid: user namespaces isolate the notebook, which cannot read a file the TA can."""
    uid = 4242
    probe = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", bwrap_path(),
                            "--unshare-user", "--disable-userns", "--ro-bind", "/", "/", "--", "/bin/true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unprivileged user namespaces are not available here: {probe.stderr.decode()[:200]}")
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="grader-ta-", dir="/tmp"))  # a folder the TA's uid can reach
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    for d in (home, home / "subs" / "s", home / "private"):
        d.mkdir(parents=True, exist_ok=True)
    (home / "private" / "grades-draft.txt").write_text("TA-PRIVATE-2718")
    (home / "subs" / "s" / "nb.py").write_text(script(_probe([str(home / "private" / "grades-draft.txt")]),
                                                     "import os\nprint(os.getuid())"))
    shutil.copy(model_dir / "2a.h5", home / "subs" / "s" / "2a.h5")
    subprocess.run(["chown", "-R", f"{uid}:{uid}", str(home)], check=True)
    (home / "private").chmod(0o700)
    home.chmod(0o755)
    python = _python_for(uid, home)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GRADER_SECRET": TEST_SECRET, "KERAS_BACKEND": "jax",
           "TMPDIR": str(home)}
    done = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", python, "-m",
                           "grader.cli", "grade", str(home / "subs"), "-a", str(TUTORIAL6), "-o", str(home / "out"),
                           "--workers", "1"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    student = json.loads((home / "out" / "results.json").read_text())["students"][0]
    assert student["notebooks"][0]["sandboxed"] is True
    failure = student["notebooks"][0]["failures"][0]
    assert "TA-PRIVATE-2718" not in json.dumps(student)
    assert "FileNotFoundError" in failure["traceback"] or "No such file" in failure["traceback"]
    assert _task(student, "2a")["status"] == "passed"


def _python_for(uid: int, home: Path) -> str:
    """A Python the uid can run: this one, or -- where this interpreter lives in a folder only root can
    enter (pyenv under /root) -- a virtual environment under /tmp made from the system's Python of the same
    version, seeing this environment's packages through a .pth file.  (So the test also shows the sandbox
    working with Python installed under /tmp.)"""
    probe = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable, "-c",
                            "import subprocess, sys; subprocess.run([sys.executable, '-c', '1'], check=True)"],
                           capture_output=True)
    if probe.returncode == 0:
        return sys.executable
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    if system is None:
        pytest.skip("no Python the unprivileged user can run")
    venv = home / "venv"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "keras").is_dir())
    (site / "grader-test.pth").write_text(f"{ours}\n{ROOT}\n")
    subprocess.run(["chown", "-R", f"{uid}:{uid}", str(venv)], check=True)
    return str(venv / "bin" / "python")
