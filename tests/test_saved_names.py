"""Models a run saves in its work folder are each kept under a name of their own: a student's script saves
``x/model.h5`` and ``x__model.h5``, two different models.  The grader copied both to ``saved/x__model.h5``;
the second copy failed (the name was taken) and that model was silently not graded.  Now each is copied to
its own relative path and graded, and the report names each by the student's own path.  A real script run in
the real sandbox (bubblewrap), then the real `grader grade`."""
import json
import os
import subprocess
import sys

import h5py
import pytest

from conftest import ROOT, TUTORIAL6, needs_sandbox

#: two models (3 and 5 hidden units) saved under the two names the old scheme made one
TWO_SAVES = """# %%
import os
import keras

small = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="relu"),
                          keras.layers.Dense(2, activation="softmax")], name="small_one")
large = keras.Sequential([keras.Input((2,)), keras.layers.Dense(5, activation="relu"),
                          keras.layers.Dense(2, activation="softmax")], name="large_one")
os.makedirs("x", exist_ok=True)
small.save("x/model.h5")
large.save("x__model.h5")
"""


def _model_name(path) -> str:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["model_config"])["config"]["name"]


@needs_sandbox
def test_two_saved_models_whose_paths_flattened_alike_are_both_taken(tmp_path):
    from grader.execute import execute_notebook
    from grader.harvest import Harvester
    from grader.intake import collect_one
    from grader.spec import load_assignment

    assignment = load_assignment(TUTORIAL6)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "work.py").write_text(TWO_SAVES)
    sub = collect_one(tmp_path / "s", assignment, "s")
    with execute_notebook(assignment, sub.files[0], sub.root, harvester=Harvester(assignment)) as ex:
        assert not ex.failures, ex.failures
        saved = dict(ex.saved)
        assert sorted(saved) == ["x/model.h5", "x__model.h5"], ex.saved
        assert saved["x/model.h5"] != saved["x__model.h5"]
        assert _model_name(saved["x/model.h5"]) == "small_one"  # each copy is its own model
        assert _model_name(saved["x__model.h5"]) == "large_one"


@needs_sandbox
def test_the_report_names_both_saved_models_by_the_students_paths(tmp_path):
    klass = tmp_path / "class"
    (klass / "mallory").mkdir(parents=True)
    (klass / "mallory" / "work.py").write_text(TWO_SAVES)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(klass), "-a", str(TUTORIAL6), "-o",
                           str(out), "--workers", "1"], capture_output=True, text=True, cwd=ROOT, timeout=1800,
                          env=dict(os.environ, GRADER_SECRET="saved-names-secret-" + "7b2e" * 8))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    student = json.loads((out / "results.json").read_text())["students"][0]
    files = {f["name"]: f for f in student["files"]}
    small, large = files.get("x/model.h5 (saved by work.py)"), files.get("x__model.h5 (saved by work.py)")
    assert small is not None and large is not None, sorted(files)
    assert "Dense(3, relu)" in small["model"] and "Dense(5, relu)" in large["model"], (small, large)


#: a real model saved, then padded past the grader's limit for a model file (64 MB) with a hole
PADDED = """# %%
import keras

model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="relu"),
                          keras.layers.Dense(2, activation="softmax")])
model.save("model.h5")
with open("model.h5", "r+b") as f:
    f.truncate(80 * 2**20)
"""


@needs_sandbox
def test_a_saved_model_too_large_to_take_is_named_not_dropped(tmp_path):
    """Before, a saved model the grader would not copy (past its size limit) vanished without a word."""
    from grader.execute import execute_notebook
    from grader.harvest import Harvester
    from grader.intake import collect_one
    from grader.spec import load_assignment

    assignment = load_assignment(TUTORIAL6)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "work.py").write_text(PADDED)
    sub = collect_one(tmp_path / "s", assignment, "s")
    with execute_notebook(assignment, sub.files[0], sub.root, harvester=Harvester(assignment)) as ex:
        assert ex.saved == [] and not ex.failures, (ex.saved, ex.failures)
        assert "model.h5, saved by the run: it is larger than 64 MB, the grader's limit for such a file; it was " \
               "not graded." in ex.notes, ex.notes
