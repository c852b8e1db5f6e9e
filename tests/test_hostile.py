"""Hostile and broken input: a clear message for that student, the others graded."""
import json
import os
import shutil
import stat

import h5py
import pytest

from conftest import TEST_SECRET, TUTORIAL6, grade_one, small_model, task_of
from grader.errors import EvaluationOutOfMemory, EvaluationTimeout, UnsafeModel


def _lambda_model(marker):
    import keras

    # a Python lambda: Keras stores its bytecode in the file, so loading could run it
    evil = keras.layers.Lambda(lambda t: (open(marker, "w").write("code ran"), t)[1])
    inp = keras.Input((2,))
    out = keras.layers.Dense(2, activation="softmax")(evil(inp))
    return keras.Model(inp, out)


def test_lambda_layer_is_refused_and_never_runs(assignment, evaluator, tmp_path):
    marker = tmp_path / "PWNED"
    model = _lambda_model(str(marker))
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    model.save(folder / "2a.h5")
    marker.unlink()  # building the model ran it once, here in the test; the grader must not
    result = grade_one(assignment, evaluator, tmp_path / "subs")
    t = task_of(result, "2a")
    assert t.status == "error" and "Lambda" in t.message
    assert not marker.exists()


def test_keras_safe_mode_also_refuses_lambda_without_the_prescan(tmp_path):
    """The second line of defence: keras_io.load alone (no config pre-scan) refuses it too."""
    from grader import keras_io

    marker = tmp_path / "PWNED"
    _lambda_model(str(marker)).save(tmp_path / "m.h5")
    marker.unlink()
    with pytest.raises(UnsafeModel):
        keras_io.load(tmp_path / "m.h5")
    assert not marker.exists()


def _bomb(path, units=10**9):
    small_model().save(path)
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        dense = [l for l in cfg["config"]["layers"] if l["class_name"] == "Dense"][0]
        dense["config"]["units"] = units
        f.attrs["model_config"] = json.dumps(cfg)


def test_shape_bomb_is_refused_and_the_batch_goes_on(tmp_path, model_dir):
    from grader.pipeline import grade_batch

    subs = tmp_path / "subs"
    (subs / "bomber").mkdir(parents=True)
    _bomb(subs / "bomber" / "2a.h5")
    assert (subs / "bomber" / "2a.h5").stat().st_size < 50_000
    (subs / "good").mkdir()
    shutil.copy(model_dir / "2a.h5", subs / "good" / "2a.h5")
    grade_batch(subs, TUTORIAL6, tmp_path / "out")
    results = {s["id"]: s for s in json.loads((tmp_path / "out" / "results.json").read_text())["students"]}
    bomb = task_of_json(results["bomber"], "2a")
    assert bomb["status"] == "error" and "1,000,000,000 units" in bomb["message"]
    assert task_of_json(results["good"], "2a")["status"] == "passed"


def task_of_json(student, tid):
    return next(t for t in student["tasks"] if t["id"] == tid)


def test_memory_cap_stops_what_the_prescan_lets_through(tmp_path):
    """With the parameter budget lifted, the worker's memory cap still ends the model, not the machine."""
    from grader.evaluate import Evaluator, dataset_seeds
    from grader.spec import load_assignment

    root = tmp_path / "a"
    shutil.copytree(TUTORIAL6, root)
    spec = root / "assignment.toml"
    spec.write_text(spec.read_text().replace("max_parameters = 2_000_000", "max_parameters = 100_000_000_000")
                    .replace("memory_mb = 3072", "memory_mb = 2048"))
    a = load_assignment(root)
    _bomb(tmp_path / "bomb.h5", units=2 * 10**8)  # 2e8 x 3 floats: 2.4 GB, over the 2 GB cap
    small_model().save(tmp_path / "ok.h5")
    with Evaluator(a, dataset_seeds(a, TEST_SECRET)) as ev:
        with pytest.raises(EvaluationOutOfMemory, match="memory"):
            ev.evaluate(tmp_path / "bomb.h5")
        assert ev.evaluate(tmp_path / "ok.h5").info.inputs == 2  # the worker lives on / restarted


def test_a_pipe_is_refused_at_once_and_a_slow_model_times_out(tmp_path):
    """A FIFO would block a reader forever: the worker never opens it as a file.  A request over its time
    limit kills the worker, which is replaced."""
    from grader.errors import UnreadableFile
    from grader.evaluate import Evaluator, dataset_seeds
    from grader.spec import load_assignment

    a = load_assignment(TUTORIAL6)
    fifo = tmp_path / "hang.h5"
    os.mkfifo(fifo)  # reading it blocks forever
    small_model().save(tmp_path / "ok.h5")
    with Evaluator(a, dataset_seeds(a, TEST_SECRET)) as ev:
        with pytest.raises(UnreadableFile, match="named pipe"):
            ev.evaluate(fifo)
        assert ev.restarts == 0
        with pytest.raises(EvaluationTimeout, match="longer than 0 s"):
            ev.evaluate(tmp_path / "ok.h5", timeout=0.001)
        assert ev.restarts == 1
        assert ev.evaluate(tmp_path / "ok.h5").info.outputs == 2


def test_broken_files_each_get_a_message_and_others_are_graded(tmp_path, model_dir):
    from grader.pipeline import grade_batch

    subs = tmp_path / "subs"
    for name in ("truncated", "text", "empty", "links", "good"):
        (subs / name).mkdir(parents=True)
    data = (model_dir / "2a.h5").read_bytes()
    (subs / "truncated" / "2a.h5").write_bytes(data[: len(data) // 2])
    (subs / "text" / "1c.h5").write_text("this is not a model\n")
    os.symlink(tmp_path / "nowhere.h5", subs / "links" / "1c.h5")
    os.mkfifo(subs / "links" / "2a.h5")
    shutil.copy(model_dir / "2a.h5", subs / "good" / "2a.h5")
    (subs / "good" / "notes.txt").write_text("hello")
    grade_batch(subs, TUTORIAL6, tmp_path / "out")
    r = {s["id"]: s for s in json.loads((tmp_path / "out" / "results.json").read_text())["students"]}
    assert "truncated or not an HDF5 Keras file" in task_of_json(r["truncated"], "2a")["message"]
    assert "not a Keras model" in task_of_json(r["text"], "1c")["message"]
    assert any("empty" in n for n in r["empty"]["notes"])
    notes = " ".join(r["links"]["notes"])
    assert "1c.h5: a symbolic link (links are never followed)" in notes and "2a.h5: a named pipe" in notes
    assert task_of_json(r["good"], "2a")["status"] == "passed"
    assert (tmp_path / "out" / "students" / "truncated.html").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_gets_a_message(tmp_path):
    from grader.intake import collect
    from grader.spec import load_assignment

    (tmp_path / "s").mkdir()
    f = tmp_path / "s" / "2a.h5"
    f.write_bytes(b"\x89HDF\r\n\x1a\n")
    f.chmod(0)
    try:
        sub = collect(tmp_path, load_assignment(TUTORIAL6))[0]
        assert "cannot be read" in sub.problems[0].explain()
    finally:
        f.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_the_worker_reports_its_memory_cap(evaluator, model_dir):
    evaluator.evaluate(model_dir / "1a.h5")
    assert evaluator.memory_capped is True
