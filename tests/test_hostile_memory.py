"""The grader's own memory, and re-training that could never count (issue 26, findings 3 and 8).

Student code writes its captures itself here, as a hostile notebook can: ``.npz`` files of 65 KB that
hold 64 MiB of int8 (512 MB once widened to float64), more captures than the tasks could use, and a 1c
recipe of 10^9 epochs at batch size 1 on data of no dataset; and its kernel sends a display message of
512 MB.  Each is bounded before the grader holds it: arrays by their header (``harvest.DataBounds``),
captures by the spec's tasks (``harvest.max_captures``), kernel messages by ZMQ
(``runner.MAX_KERNEL_MESSAGE_BYTES``), and a recipe whose data are no task's is not re-trained.  The
class test grades such students beside a control student inside a memory cgroup.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tracemalloc
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TEST_SECRET, TUTORIAL6, small_model, task_of
from test_security import needs_sandbox, script

#: the forged data of the issue: an int8 array of (nearly) 64 MiB, 65 KB compressed, within MAX_DATA_BYTES
FORGED_VALUES = 64 * 2**20 - 4096

#: a hostile cell: ``{count}`` captures written by hand into the capture folder, each a model of task 1c's
#: layers with a recipe of 10^9 epochs at batch size 1 and the data ``{x}``, ``{y}`` (expressions)
FORGE_CAPTURES = """import json, os, numpy as np, keras
out = os.environ["GRADER_CAPTURE_DIR"]
model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(150, activation="relu"), keras.layers.Dense(1)])
for i in range({first}, {first} + {count}):
    stem = os.path.join(out, "capture-%03d" % (900 + i))
    model.save(stem + ".keras")
    x = {x}
    np.savez_compressed(stem + ".npz", x=x, y={y})
    with open(stem + ".json", "w") as f:
        json.dump({{"index": 900 + i, "event": "fit", "epochs": 10**9, "batch_size": 1, "loss": "mse",
                   "optimizer": "SGD", "learning_rate": 0.01, "optimizer_config": {{"module": "keras.optimizers",
                   "class_name": "SGD", "config": {{"learning_rate": 0.01}}}}}}, f)
"""
INT8_BOMB = (f"np.zeros({FORGED_VALUES}, np.int8)", "x[:10]")
#: 20,000 points of [0, 1] (the most loaded, 1c's input): drawn like no dataset (the sheet's are 200 given points)
NO_DATASET = ("np.random.default_rng(7).uniform(0, 1, (20000, 1))", "x")
#: the issue's 1c data: 4,000,000 points (x and y 32 MB each once loaded, within the former caps; 0.3 MB written)
MILLIONS = ("np.tile(np.linspace(0, 1, 1000), 4000)[:, None]", "x")


def forge_cell(data: tuple[str, str], count: int = 1, first: int = 0) -> str:
    """A notebook cell that writes ``count`` forged captures of ``data`` (x, y) into the capture folder."""
    return FORGE_CAPTURES.format(count=count, x=data[0], y=data[1], first=first)


def _forge(folder: Path, data: tuple[str, str], count: int = 1) -> None:
    """What FORGE_CAPTURES writes, written here (as the kernel would) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    code = forge_cell(data, count).replace('os.environ["GRADER_CAPTURE_DIR"]', repr(str(folder)))
    exec(compile(code, "forge", "exec"), {})  # noqa: S102 (the test's own code)


def _peak_bytes(fn):
    """(fn(), the peak of Python and NumPy allocations while it ran)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        value = fn()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_forged_int8_capture_is_refused_before_it_is_widened(assignment, tmp_path):
    from grader.harvest import DataBounds, MAX_DATA_BYTES, take_capture

    _forge(tmp_path / "capture", INT8_BOMB)
    data = (tmp_path / "capture" / "capture-900.npz").read_bytes()
    assert len(data) < 100_000 < MAX_DATA_BYTES  # 65 KB on disk
    cap, peak = _peak_bytes(lambda: take_capture(tmp_path / "capture", "capture-900.json", tmp_path / "taken",
                                                 DataBounds.of(assignment)))
    assert cap is not None and cap.model_path.is_file()  # the model is still graded, as a model
    assert cap.x is None and cap.y is None  # its data were not loaded...
    assert peak < 8 * 2**20  # ...not even for a moment (widened: 512 MB)
    # the same capture with data a task can use loads, as float64
    np.savez(tmp_path / "capture" / "capture-900.npz", x=np.linspace(0, 1, 200, dtype=np.float32)[:, None],
             y=np.zeros(200, np.int8))
    cap = take_capture(tmp_path / "capture", "capture-900.json", tmp_path / "taken2", DataBounds.of(assignment))
    assert cap.x.shape == (200, 1) and cap.x.dtype == np.float64 and cap.y.shape == (200,)


def test_arrays_wider_or_longer_than_the_tasks_use_are_not_loaded(assignment):
    from grader.harvest import MAX_TRAINING_POINTS, DataBounds, load_arrays

    bounds = DataBounds.of(assignment)
    assert (bounds.x_width, bounds.y_width) == (2, 2)  # tutorial6: two inputs at most, two outputs at most

    def npz(**arrays):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    assert load_arrays(npz(x=np.zeros((10, 3))), bounds) == (None, None)  # no task takes three inputs
    assert load_arrays(npz(x=np.zeros((MAX_TRAINING_POINTS + 1, 2))), bounds) == (None, None)
    assert load_arrays(npz(x=np.array(["1", "2"])), bounds) == (None, None)  # numbers only
    x, y = load_arrays(npz(x=np.zeros((10, 2)), y=np.zeros((10, 5))), bounds)
    assert x.shape == (10, 2) and y is None  # five label columns: no task has five outputs
    x, _ = load_arrays(npz(x=np.asfortranarray(np.arange(12).reshape(6, 2))), bounds)
    assert x.tolist() == np.arange(12.0).reshape(6, 2).tolist()


def test_a_forged_negative_dimension_does_not_read_the_whole_member(assignment):
    """numpy's header parser takes shape (-1, 2): the count is negative and a read of a negative size reads the
    whole member, 40 MB of zeros from a file of 40 KB (found by a review of the memory budget)."""
    import zipfile

    from grader.harvest import DataBounds, load_arrays

    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False, "shape": (-1, 2)})
    member.write(bytes(40 * 2**20))
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", member.getvalue())
    assert len(data.getvalue()) < 100_000
    result, peak = _peak_bytes(lambda: load_arrays(data.getvalue(), DataBounds.of(assignment)))
    assert result == (None, None)
    assert peak < 4 * 2**20  # nothing of the member read (before: all 40 MB of it)


def test_identifying_the_most_points_loaded_stays_small(assignment):
    from grader.harvest import MAX_TRAINING_POINTS, identify_datasets
    from grader.spec import import_reference

    gen = import_reference(assignment, assignment.datasets["circle"].generator)
    x, y = gen(MAX_TRAINING_POINTS, scale=1, rng=np.random.default_rng(3))
    found, peak = _peak_bytes(lambda: identify_datasets(assignment, np.asarray(x, float), np.asarray(y, float)))
    assert found[0] == "circle"
    assert peak < 128 * 2**20  # all 20,000 points against the reference points at once: 570 MB


def _capture_of(assignment, folder: Path, data: tuple[str, str], taken: Path):
    from grader.harvest import DataBounds, take_capture

    _forge(folder, data)
    cap = take_capture(folder, "capture-900.json", taken, DataBounds.of(assignment))
    cap.identify(assignment)
    return cap


def _evaluated(assignment, evaluator, cap, keep: Path):
    from grader.measure.student import capture_source

    source = capture_source(cap, "forge.py", keep)
    return source, evaluator.evaluate(cap.model_path, source.training, provenance=source.provenance)


def _short_retraining(assignment, seconds=30):
    """The spec with a re-training budget of ``seconds`` (600 in tutorial6): a test that fails, fails quickly."""
    return replace(assignment, limits=replace(assignment.limits, retraining=replace(assignment.limits.retraining,
                                                                                      budget_s=seconds)))


def test_a_forged_1c_recipe_on_data_of_no_dataset_is_not_retrained(assignment, evaluator, tmp_path):
    """The issue's 1c capture: 10^9 epochs at batch size 1 on data of no dataset.  Before, it re-trained for the
    whole re-training budget (here cut to 30 s, 600 s in the spec) although scoring could never count it."""
    from grader.measure import Measurements
    from grader.session import retrain_recipes
    from grader.score import score_student

    spec = _short_retraining(assignment)
    cap = _capture_of(spec, tmp_path / "capture", NO_DATASET, tmp_path / "taken")
    assert cap.x.shape == (20000, 1) and cap.datasets == ()  # loaded, and drawn like no dataset
    evaluated = [_evaluated(spec, evaluator, cap, tmp_path / "recipes")]
    (tmp_path / "scratch").mkdir()
    retrain_recipes(spec, evaluator, evaluated, tmp_path / "scratch")
    record = evaluated[0][1].retraining
    assert record.runs == [] and record.stopped is None  # not one re-training
    assert "are not the data of task 1c" in record.refused and "20,000 points" in record.refused
    t = task_of(score_student(spec, Measurements("s", [], [], [], {}, evaluated)), "1c")
    assert "Your recipe was not re-trained: the data it was trained on (20,000 points) are not the data of " \
           "task 1c" in t.message


def test_the_issues_1c_capture_of_millions_of_points_is_not_retrained(assignment, evaluator, tmp_path):
    """Before, its 4,000,000 points were loaded (64 MB) and re-trained for the whole re-training budget."""
    from grader.session import retrain_recipes

    spec = _short_retraining(assignment)
    cap = _capture_of(spec, tmp_path / "capture", MILLIONS, tmp_path / "taken")
    assert (tmp_path / "capture" / "capture-900.npz").stat().st_size < 2**20
    assert cap.x is None  # 4,000,000 points: more than identification takes, so not loaded
    evaluated = [_evaluated(spec, evaluator, cap, tmp_path / "recipes")]
    (tmp_path / "scratch").mkdir()
    retrain_recipes(spec, evaluator, evaluated, tmp_path / "scratch")
    record = evaluated[0][1].retraining
    assert record.runs == [] and "training data was not captured" in record.refused


def test_a_recipe_on_the_tasks_data_is_chosen_over_a_forged_one(assignment, evaluator, tmp_path):
    """Two 1c fits short of the pass threshold: the sheet's data, then a forged capture on data of no dataset.
    The sheet's is the one re-trained (before: the later one, whose data never count)."""
    from grader.retrain.plan import retraining_plan as _retraining_plan
    from grader.spec import import_reference

    sheet_x = np.asarray(import_reference(assignment, assignment.datasets["curve"].train_x)(), float).ravel()
    np.save(tmp_path / "sheet_x.npy", sheet_x[:, None])
    own = _capture_of(assignment, tmp_path / "a", (f"np.load({str(tmp_path / 'sheet_x.npy')!r})", "x"),
                      tmp_path / "ta")
    forged = _capture_of(assignment, tmp_path / "b", NO_DATASET, tmp_path / "tb")
    assert own.datasets == ("curve",) and forged.datasets == ()
    evaluated = [_evaluated(assignment, evaluator, own, tmp_path / "r"),
                 _evaluated(assignment, evaluator, forged, tmp_path / "r")]
    plan = _retraining_plan(assignment, evaluated)
    assert {i: [t.id for t in tasks] for i, tasks in plan.items()} == {0: ["1c"]}


def _run(assignment, tmp_path, *cells):
    """Run a script of ``cells`` as a student's notebook; the ``Execution`` (a context manager)."""
    from grader.execute import execute_notebook
    from grader.harvest import Harvester
    from grader.intake import collect

    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    (folder / "work.py").write_text(script(*cells))
    (submission,) = collect(tmp_path / "subs", assignment)
    return execute_notebook(assignment, submission.files[0], submission.root, harvester=Harvester(assignment))


@needs_sandbox
def test_captures_beyond_what_the_tasks_could_use_are_not_taken(assignment, tmp_path):
    from grader.harvest import max_captures

    most = max_captures(assignment)
    assert most == 50  # five per model task (ten in tutorial6); before: 200
    small = ("np.linspace(0, 1, 5)[:, None]", "x")
    with _run(assignment, tmp_path, forge_cell(small, most - 10), forge_cell(small, 15, first=most - 10)) as ex:
        assert len(ex.captures) == most
        assert max(c.index for c in ex.captures) == 900 + most - 1  # the first ones, in order
        assert any(f"Only the first {most} models the notebook made" in n and "from cell 2 on" in n
                   for n in ex.notes), ex.notes


@needs_sandbox
def test_a_students_notebooks_together_hold_the_data_of_so_many_captures(assignment, evaluator, tmp_path):
    """Two notebooks of 30 captures each: every model is graded, the data of the first 50 alone are held
    (before: of all, so a student of many notebooks multiplied the bound of one)."""
    from grader.harvest import max_captures
    from grader.intake import collect
    from grader.session import GradingSession

    small = ("np.linspace(0, 1, 5)[:, None]", "x")
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    for name in ("one.py", "two.py"):
        (folder / name).write_text(script(forge_cell(small, 30)))
    (submission,) = collect(tmp_path / "subs", assignment)
    measured = GradingSession(assignment, evaluator.seeds, evaluator=evaluator).measure(submission)
    samples = [source.provenance.samples for source, _ in measured.evaluated]
    assert len(samples) == 60 and samples.count(5) == max_captures(assignment) == 50 and samples.count(None) == 10


@needs_sandbox
def test_a_kernel_message_too_large_is_dropped_and_the_student_told(assignment, tmp_path):
    """A 64 MB display message, then one of 300 parts of just under 1 MB each (ZMQ caps only parts): the grader
    held each whole (254 MB and 657 MB at its peak).  Both are dropped as they arrive, the channel carries on
    (the last cell's error is heard), and the student is told which cells' output was dropped."""
    from grader.execute.runner import MAX_KERNEL_MESSAGE_BYTES

    shout = "from IPython.display import display\ndisplay({'text/plain': 'x' * (64 * 2**20)}, raw=True)"
    parts = ("k = get_ipython().kernel\nk.session.send(k.iopub_socket, 'display_data', content={'data': "
             "{'text/plain': 'hi'}, 'metadata': {}}, parent=k.get_parent('shell'), "
             "buffers=[b'z' * (2**20 - 4096)] * 300)")
    with _run(assignment, tmp_path, shout, "print('between')", parts, "raise ValueError('still heard')") as ex:
        assert ex.run.dropped_messages == {1: 1, 3: 1}
        assert [c.status for c in ex.run.cells] == ["ok", "ok", "ok", "error"]
        assert ex.run.cells[3].error_value == "still heard"
        said = [n for n in ex.notes if "larger than the grader takes" in n]
        assert len(said) == 2 and said[0].startswith("Cell 1 sent 1 message(s)") and said[1].startswith("Cell 3")
        assert f"({MAX_KERNEL_MESSAGE_BYTES // 2**20} MB" in said[0]


def test_the_relay_passes_messages_within_the_bound_and_drops_larger_ones_whole():
    """``relay.Relay`` between two real ZMQ sockets: small messages pass in order, with their parts; a message of
    five parts of 1 MB minus a little (each under the bound, together over it) is dropped, and so is one part
    over the bound; what follows still arrives."""
    import asyncio
    import tempfile

    import zmq
    import zmq.asyncio

    from grader.execute.relay import Relay

    async def exchange():
        folder = tempfile.mkdtemp(prefix="relay-test-")
        ctx = zmq.asyncio.Context()
        kernel = ctx.socket(zmq.ROUTER)
        kernel.bind(f"ipc://{folder}/shell")
        dropped = []
        relay = Relay(lambda channel: f"{folder}/{channel}", 2**20, dropped.append)
        client = ctx.socket(zmq.DEALER)
        try:
            client.connect(relay.url("shell"))
            await client.send_multipart([b"hello", b"kernel"])
            ident, *asked = await asyncio.wait_for(kernel.recv_multipart(), 30)
            for message in ([b"small"], [b"z" * (2**20 - 1000)] * 5, [b"y" * (2**20 + 1)], [b"a", b"b"]):
                await kernel.send_multipart([ident, *message])
            heard = [await asyncio.wait_for(client.recv_multipart(), 30) for _ in range(2)]
            return asked, heard, dropped
        finally:
            relay.close()
            ctx.destroy(linger=0)
            shutil.rmtree(folder, ignore_errors=True)

    asked, heard, dropped = asyncio.run(exchange())
    assert asked == [b"hello", b"kernel"]
    assert heard == [[b"small"], [b"a", b"b"]]
    assert dropped == ["shell", "shell"]


CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")
#: the memory group the class below is graded in: the grading process with its evaluation and training workers
#: (the kernels run in memory groups of their own).  Measured: 430 MB at most.
CLASS_MEMORY_MB = 2048
#: the grading process's own peak for that class (measured: 165 MB; before, twelve forged captures: 6 GB)
GRADER_PEAK_MB = 512
#: runs ``grader`` and reports its own peak memory on stderr: VmHWM, this program's own (ru_maxrss would count
#: the pages of the test's process it was forked from)
PEAK_REPORTER = """import sys
if __name__ == "__main__":
    from grader.cli import main
    sys.argv = ["grader"] + sys.argv[1:]
    try:
        main()
    finally:
        with open("/proc/self/status") as status:
            kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        print("GRADER-PEAK-MB", kb // 1024, file=sys.stderr)
"""


@pytest.fixture
def memory_group(request):
    """A child memory cgroup (v1) of ``CLASS_MEMORY_MB``, removed after the test; skips where none can be made."""
    from grader.execute.sandbox import _remove_cgroup

    if not (CGROUP_MEMORY / "tasks").exists():
        pytest.skip("no cgroup v1 memory controller at /sys/fs/cgroup/memory")
    group = CGROUP_MEMORY / f"grader-test-{uuid.uuid4().hex[:12]}"
    try:
        group.mkdir()
    except OSError as e:
        pytest.skip(f"memory cgroups cannot be made here ({e.strerror})")
    request.addfinalizer(lambda: _remove_cgroup(group))
    (group / "memory.limit_in_bytes").write_text(str(CLASS_MEMORY_MB * 2**20))
    try:
        (group / "memory.memsw.limit_in_bytes").write_text(str(CLASS_MEMORY_MB * 2**20))
    except OSError:
        pass  # no swap accounting: the memory limit alone
    return group


def _measured(out: Path, student: str) -> dict:
    """A student's measurements as the batch stored them in its gradebook."""
    from grader.store import codec

    with sqlite3.connect(out / "gradebook.sqlite") as db:
        (blob,), = db.execute("SELECT measurements FROM submissions JOIN students ON submissions.student = "
                              "students.id WHERE students.student_id = ?", (student,))
    return codec.decode(blob)


@needs_sandbox
def test_the_class_survives_a_memory_group_with_the_hostile_captures(memory_group, tmp_path):
    """Twelve forged 64 MiB int8 captures, a forged 1c recipe on data of no dataset, and a 512 MB display message,
    beside the sheet's own notebook, graded by ``grader grade`` in a 2 GB memory group: the batch finishes, the
    control student is graded in full, and the grading process stays under ``GRADER_PEAK_MB``."""
    subs = tmp_path / "subs"
    for name in ("forger", "shouter", "control"):
        (subs / name).mkdir(parents=True)
    (subs / "forger" / "forge.py").write_text(script(forge_cell(INT8_BOMB, 12), forge_cell(NO_DATASET, 1, first=12)))
    (subs / "shouter" / "shout.py").write_text(script(
        "from IPython.display import display\ndisplay({'text/plain': 'x' * 2**29}, raw=True)", "print('heard')"))
    shutil.copy(TUTORIAL6 / "solution.ipynb", subs / "control" / "solution.ipynb")
    (tmp_path / "peak.py").write_text(PEAK_REPORTER)
    env = {**os.environ, "GRADER_SECRET": TEST_SECRET, "KERAS_BACKEND": "jax"}
    join = f"echo $$ > {memory_group / 'tasks'} && exec \"$0\" \"$@\""
    done = subprocess.run(["/bin/sh", "-c", join, sys.executable, str(tmp_path / "peak.py"), "grade", str(subs),
                           "-a", str(TUTORIAL6), "-o", str(tmp_path / "out"), "--workers", "1"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    used_mb = int((memory_group / "memory.max_usage_in_bytes").read_text()) // 2**20
    assert done.returncode == 0, (done.returncode, used_mb, done.stderr[-3000:])  # -9: the group's OOM killer
    peak = int(done.stderr.rsplit("GRADER-PEAK-MB", 1)[1].split()[0])
    assert peak < GRADER_PEAK_MB, (peak, done.stderr[-2000:])
    results = {s["id"]: s for s in json.loads((tmp_path / "out" / "results.json").read_text())["students"]}
    assert set(results) == {"forger", "shouter", "control"}
    control = results["control"]
    assert control["tasks"] and all(t["status"] == "passed" for t in control["tasks"]), control["tasks"]
    records = [e["retraining"] for _, e in _measured(tmp_path / "out", "forger")["evaluated"] if "retraining" in e]
    assert len(records) == 1 and records[0]["runs"] == [] and "are not the data of task 1c" in records[0]["refused"]
    assert any("larger than the grader takes" in n for n in results["shouter"]["notes"]), results["shouter"]["notes"]
    print(f"memory group peak {used_mb} MB, grading process {peak} MB")
