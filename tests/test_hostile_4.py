"""Hostile submissions, fourth round: marks not earned, and harm to the TA's machine or the class's batch.

Each case is its own hostile submission, run by the real parts (sandboxed kernels, the evaluation and training
workers, h5py and Keras' loader); the forged capture is graded beside an honest classmate whose run really got
stuck (``klass``, graded once).  Assertions are on grades, words and what was held or read, never on time.
"""
from __future__ import annotations

import json

import pytest

from conftest import needs_sandbox, task_of
from test_check import STUCK_2A  # an honest 2a run that gets stuck at the majority class, saved as model.h5

#: a script that never trains: it saves the sheet's 2a network as built (model.h5), and writes into the capture
#: folder a capture of its own claiming that this very model came out of a fit of a recipe that trains well
#: (Adam 0.01, 300 epochs, the sheet's data).  The grader re-trains that recipe honestly; the forged capture's
#: weights are model.h5's, so "twin credit" took the re-training's pass for the saved file too.
FORGED_CAPTURE = """# %%
import json, os
import numpy as np, keras
from tools import gen_simple_circular_distribution
np.random.seed(3)
X, y = gen_simple_circular_distribution(200)
keras.utils.set_random_seed(3)
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation='relu'),
                          keras.layers.Dense(4, activation='relu'), keras.layers.Dense(2, activation='softmax')])
opt = keras.optimizers.Adam(0.01)
model.compile(loss='categorical_crossentropy', optimizer=opt)
model.save('model.h5')  # never trained
# %%
stem = os.path.join(os.environ['GRADER_CAPTURE_DIR'], 'capture-900')
model.save(stem + '.keras')
np.savez(stem + '.npz', x=np.asarray(X, float), y=keras.utils.to_categorical(np.ravel(y), 2))
with open(stem + '.json', 'w') as f:
    json.dump({'index': 900, 'event': 'fit', 'model_file': stem + '.keras', 'epochs': 300, 'batch_size': 32,
               'validation_split': 0.0, 'shuffle': True, 'loss': 'categorical_crossentropy', 'optimizer': 'Adam',
               'learning_rate': 0.01, 'optimizer_config': keras.optimizers.serialize(opt),
               'loss_config': 'categorical_crossentropy', 'weight_change': 0.5}, f, default=float)
print('forged')
"""


@pytest.fixture(scope="module")
def klass(assignment, evaluator, tmp_path_factory):
    """The hostile student and their honest classmate, each graded as a batch grades them (real sandboxed
    kernels, the session's evaluation and training workers): {student id: StudentResult}."""
    from conftest import grade_one

    subs = tmp_path_factory.mktemp("hostile4") / "subs"
    results = {}
    for student, files in {
        "forger": {"work.py": FORGED_CAPTURE},
        "honest": {"work.py": "# %%\n" + STUCK_2A},
    }.items():
        (subs / student).mkdir(parents=True)
        for name, text in files.items():
            (subs / student / name).write_text(text)
        results[student] = grade_one(assignment, evaluator, subs, student)
    return results


# -- a forged capture and twin credit ---------------------------------------------------------------------------


@needs_sandbox
def test_a_forged_capture_earns_an_untrained_saved_model_no_recipe_credit(klass):
    """Hostile: the forged capture above.  Its recipe is re-trained, honestly, and may earn 2a (the recipe is
    the student's); but model.h5 was never trained, and the only thing that tied it to that recipe is a file the
    student wrote.  Before, task 3 read "It is the model of task 2a your notebook trained ... counts as a trained
    model": 10/10."""
    forger = klass["forger"]
    assert "re-trained by the grader" in task_of(forger, "2a").message  # the premise: the recipe was re-trained
    three = task_of(forger, "3")
    assert three.score == 5 and three.status == "partial", three.message
    assert "your notebook trained" not in three.message and "counts as a trained model" not in three.message
    assert "does no better than an untrained one" in three.message


@needs_sandbox
def test_an_honest_stuck_run_saved_as_model_h5_keeps_its_recipe_credit(klass):
    """The honest twin: the sheet's 2a, trained in the notebook on a seed where SGD gets stuck at the majority
    class, saved as model.h5.  Its recipe re-trained passes, and the saved file counts as the trained model it is
    (its held-out answers beat the class frequencies' cross-entropy, which the forged one's do not)."""
    honest = klass["honest"]
    assert "re-trained by the grader" in task_of(honest, "2a").message
    three = task_of(honest, "3")
    assert three.score == 10, three.message
    assert "training got stuck on the seed the grader gave it" in three.message, three.message


# -- output: the notebook's together, not only each cell's ------------------------------------------------------


@needs_sandbox
def test_a_notebook_of_many_cells_each_at_its_output_cap_is_bounded_as_a_whole(tmp_path):
    """Hostile: 160 cells, each printing just under a cell's 64 KB cap.  Each cell was bounded, the notebook not:
    a script of 54,000 ``# %%`` cells (22 ms each, within a Keras 2 run's 1,200 s) held 3.5 GB in the grading
    process.  Now a run keeps at most ``MAX_NOTEBOOK_OUTPUT_BYTES`` of output, says once where it stopped, and
    every cell still runs."""
    import nbformat

    from grader.execute.runner import MAX_NOTEBOOK_OUTPUT_BYTES, NotebookRunner
    from grader.execute.sandbox import Limits, Sandbox

    cells = 160
    assert cells * 60_001 > MAX_NOTEBOOK_OUTPUT_BYTES  # the premise: more than the cap, every cell within its own
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('x' * 60000)") for _ in range(cells)]
                                  + [nbformat.v4.new_code_cell("open('ran-to-the-end', 'w').close()")])
    sandbox = Sandbox(tmp_path / "work", tmp_path / "runtime", Limits())
    run = NotebookRunner(nb, sandbox, cell_timeout=120, notebook_timeout=600).run()
    assert [c.status for c in run.cells] == ["ok"] * (cells + 1)
    held = sum(len(o.get("text", "")) for c in nb.cells for o in c.get("outputs", []))
    assert held <= MAX_NOTEBOOK_OUTPUT_BYTES, held
    said = [o["text"] for c in nb.cells for o in c.get("outputs", []) if "of this notebook" in o.get("text", "")]
    assert len(said) == 1 and "from here on, was dropped" in said[0], said
    assert (tmp_path / "work" / "ran-to-the-end").exists()


# -- a model file whose stored arrays are larger than its layers --------------------------------------------------


def _unallocated(f, key: str, values: int) -> None:
    """Replace array ``key`` of an open HDF5 file by one of ``values`` float32s never written (HDF5's fill value:
    a few KB on disk, chunked and compressed)."""
    import h5py

    del f[key]
    f.create_dataset(key, shape=(2, values // 2), dtype="float32", chunks=(1, 2**20), compression="gzip",
                     fillvalue=0.0)
    assert isinstance(f[key], h5py.Dataset)


def test_a_model_file_declaring_arrays_of_gigabytes_is_refused_from_its_headers(evaluator, tmp_path):
    """Hostile: a 2a.h5 of 17 KB (and a 2a.keras whose weights file is the same) whose first kernel is an array of
    800 million floats never written.  The config is the sheet's, so the parameter budget passed it; Keras' loader
    read the array whole (3 GB in the evaluation worker, up to its memory cap, then "check the number of units").
    Refused now from the file's headers, before Keras opens it; a plain model still loads."""
    import zipfile

    import h5py

    from conftest import small_model
    from grader.errors import CorruptModel

    model = small_model()
    model.save(tmp_path / "plain.h5")
    model.save(tmp_path / "plain.keras")
    bomb = tmp_path / "2a.h5"
    bomb.write_bytes((tmp_path / "plain.h5").read_bytes())
    with h5py.File(bomb, "r+") as f:
        kernels = []
        f.visit(lambda n: kernels.append(n) if n.endswith("kernel") else None)
        _unallocated(f, kernels[0], 800_000_000)
    assert bomb.stat().st_size < 100_000  # the premise: small on disk
    weights = tmp_path / "weights.h5"
    with zipfile.ZipFile(tmp_path / "plain.keras") as z:
        weights.write_bytes(z.read("model.weights.h5"))
        members = {n: z.read(n) for n in z.namelist()}
    with h5py.File(weights, "r+") as f:
        arrays = []
        f.visititems(lambda n, o: arrays.append(n) if isinstance(o, h5py.Dataset) else None)
        _unallocated(f, arrays[0], 800_000_000)
    with zipfile.ZipFile(tmp_path / "2a.keras", "w") as z:
        for name, data in members.items():
            z.writestr(name, weights.read_bytes() if name == "model.weights.h5" else data)
    for path in (bomb, tmp_path / "2a.keras"):
        with pytest.raises(CorruptModel, match="declares arrays of more than") as refused:
            evaluator.evaluate(path)
        assert "memory" not in refused.value.message, refused.value.message
    assert evaluator.evaluate(tmp_path / "plain.h5").info.inputs == 2
    assert evaluator.evaluate(tmp_path / "plain.keras").info.inputs == 2


# -- a capture's data archive that lists entries by the hundred thousand ------------------------------------------


def test_a_capture_whose_data_archive_lists_thousands_of_entries_is_not_read_entry_by_entry(assignment, tmp_path):
    """Hostile: a notebook replaces its capture's .npz by one listing 20,000 empty entries beside x and y (the
    hook's np.savez writes two; 16 MB list 180,000).  ``zipfile`` parsed every entry in the grader's own process
    (at 180,000: 1.4 s and 106 MB, for each of a run's 50 captures).  Now the end record is read first: such data are not loaded, the model is
    still taken; an honest capture's data still are."""
    import io
    import zipfile

    import numpy as np

    from conftest import small_model
    from grader.harvest import MAX_DATA_BYTES, take_capture

    capture = tmp_path / "capture"
    capture.mkdir()
    x, y = np.random.default_rng(0).normal(size=(200, 2)), np.eye(2)[np.arange(200) % 2]
    for stem, entries in (("capture-001", 0), ("capture-002", 20_000)):
        small_model().save(capture / f"{stem}.keras")
        (capture / f"{stem}.json").write_text(json.dumps({"index": 1, "event": "fit", "epochs": 5}))
        with zipfile.ZipFile(capture / f"{stem}.npz", "w", zipfile.ZIP_STORED) as z:
            for name, a in (("x", x), ("y", y)):
                buf = io.BytesIO()
                np.save(buf, a)
                z.writestr(f"{name}.npy", buf.getvalue())
            for i in range(entries):
                z.writestr(zipfile.ZipInfo(f"{i:x}"), b"")
    assert (capture / "capture-002.npz").stat().st_size <= MAX_DATA_BYTES  # the premise: within the size bound
    honest = take_capture(capture, "capture-001.json", tmp_path / "taken")
    assert honest.x is not None and honest.x.shape == (200, 2)
    hostile = take_capture(capture, "capture-002.json", tmp_path / "taken")
    assert hostile is not None and hostile.model_path.exists()  # its model is still graded...
    assert hostile.x is None and hostile.y is None  # ...without the data its archive would not list plainly


# -- a run that saves model files by the hundred ------------------------------------------------------------------


def test_a_run_that_saves_hundreds_of_model_files_has_only_as_many_graded_as_captures(assignment, tmp_path):
    """Hostile: a notebook saves 300 small models (m0.h5 ... m299.h5) and its model.h5.  Every one was taken,
    evaluated and stored with its plots (600 such files: 2 min 24 s of the grader and a 59 MB gradebook row for
    one student; a run may write 5,000).  Now a run's saved models are bounded as its captures are
    (``max_captures``), the spec's own names first, and the report says how many were not graded."""
    import shutil

    from conftest import small_model
    from grader import untrusted
    from grader.harvest import Harvester, max_captures

    work = tmp_path / "work"
    work.mkdir()
    small_model().save(work / "m0.h5")
    for i in range(1, 300):
        shutil.copyfile(work / "m0.h5", work / f"m{i}.h5")
    shutil.copyfile(work / "m0.h5", work / "model.h5")
    harvester = Harvester(assignment)
    harvester.start(tmp_path / "taken")
    saved = harvester.saved(work, {}, untrusted.Bounds(max_entries=1000, max_bytes=2**30, max_depth=8))
    most = max_captures(assignment)
    assert len(saved) == most < 301
    assert "model.h5" in {rel for rel, _ in saved}  # the task's own file is among those graded
    assert sum(1 for _ in (tmp_path / "taken").rglob("*.h5")) == most  # the rest were not even copied
    (said,) = [n for n in harvester.refused if "model files" in n]
    assert f"The run saved 301 model files; only {most} were graded" in said, said
