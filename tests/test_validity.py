"""A grade measures the student's work: the same every time, and impossible without the work."""
import shutil

import pytest

from conftest import TUTORIAL6, grade_one, needs_sandbox, task_of


#: the sheet's 2a, as a student writes it: no seed anywhere
SHEET_2A = """# %%
import numpy as np
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Dense
from tensorflow.keras.utils import to_categorical
from tools import *

# %%
X, y = gen_simple_circular_distribution(200)
model = Sequential()
model.add(Dense(units=4, activation='relu', input_dim=2))
model.add(Dense(units=4, activation='relu'))
model.add(Dense(units=2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer='sgd')
model.fit(X, to_categorical(y), epochs=250, batch_size=32, verbose=0)
"""

#: task 1c without the work: three hand-set ReLUs doing the fit, 147 dead ones, one predict
HAND_SET_1C = """# %%
import numpy as np
import keras
x = np.linspace(0, 1, 200)
model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(150, activation='relu'),
                          keras.layers.Dense(1, activation='linear')])
kernel, bias = np.zeros((1, 150)), np.full(150, -1.0)
kernel[0, :3], bias[:3] = [0.5, 1.75, 1.25], [-0.05, -1.05, -1.0]
out = np.zeros((150, 1)); out[:3, 0] = [1, -1, 1]
model.layers[0].set_weights([kernel, bias]); model.layers[1].set_weights([out, np.zeros(1)])
y_pred = model.predict(x, verbose=0)
"""

#: task 2c without the work: an untrained network "fitted" with a learning rate of 0 on 30 points chosen
#: because it already classifies them
LR0_2C = """# %%
import numpy as np
import keras
from tools import gen_simple_circular_distribution
keras.utils.set_random_seed(3)
model = keras.Sequential([keras.Input((2,))] + [keras.layers.Dense(6, activation='relu') for _ in range(3)]
                         + [keras.layers.Dense(2, activation='softmax')])
X, y = gen_simple_circular_distribution(400, scale=2)
right = np.argmax(np.asarray(model(X)), axis=1) == y  # calling the model: nothing is captured
keep = np.concatenate([np.flatnonzero(right & (y == 0))[:10], np.flatnonzero(right & (y == 1))[:20]])
model.compile(loss='categorical_crossentropy', optimizer=keras.optimizers.SGD(learning_rate=0.0))
model.fit(X[keep], keras.utils.to_categorical(y[keep], 2), epochs=5, verbose=0)
"""

#: task 2c without the work: an xor classifier with 2c's layers, fitted last on five xor points, few enough that
#: every dataset is about as likely to have given them (its "gap" against 2c's data would pass)
XOR_THEN_FIVE_POINTS = """# %%
import numpy as np
import keras
from tools import gen_xor_distribution
keras.utils.set_random_seed(5)
model = keras.Sequential([keras.Input((2,))] + [keras.layers.Dense(6, activation='relu') for _ in range(3)]
                         + [keras.layers.Dense(2, activation='softmax')])
model.compile(loss='categorical_crossentropy', optimizer='adam')
X, y = gen_xor_distribution(100)
model.fit(X, keras.utils.to_categorical(y, 2), epochs=250, verbose=0)
X5, y5 = gen_xor_distribution(5)
model.fit(X5, keras.utils.to_categorical(y5, 2), epochs=1, verbose=0)
"""

#: task 2c without the work: 2c's network fitted on the points of one class only, so that it always answers that
#: class: right on every training point, and on the two thirds of new points of that class ("gap" 0.33)
ONE_CLASS_2C = """# %%
import numpy as np
import keras
from tools import gen_simple_circular_distribution
keras.utils.set_random_seed(6)
model = keras.Sequential([keras.Input((2,))] + [keras.layers.Dense(6, activation='relu') for _ in range(3)]
                         + [keras.layers.Dense(2, activation='softmax')])
model.compile(loss='categorical_crossentropy', optimizer='adam')
X, y = gen_simple_circular_distribution(90, scale=2)
ones = y == 1
model.fit(X[ones], keras.utils.to_categorical(y[ones], 2), epochs=200, verbose=0)
"""

#: draws of NumPy's generator (``np.random.seed``, the course's draw order) at which the sheet's 2c data (30 points
#: at scale 2) are likelier under the scale-1 circular data (112) or the ring data (137) than under their own
UNLUCKY_2C_DRAWS = {112: "circle", 137: "ring"}


def _module(path):
    """A module of the assignment's folder, imported from its file; ``sys.path`` and the folder's plain module
    names (``solution``, ``datasets``, which make_demo imports) are left as they were for the other tests."""
    import importlib.util
    import sys

    siblings = {p.stem for p in path.parent.glob("*.py")}
    saved_path, saved = list(sys.path), {n: sys.modules.pop(n) for n in list(sys.modules) if n in siblings}
    try:
        spec = importlib.util.spec_from_file_location(f"tutorial6_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved_path
        for name in siblings:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def _student(tmp_path, name, text):
    folder = tmp_path / name / "s"
    folder.mkdir(parents=True)
    (folder / "work.py").write_text(text)
    return tmp_path / name


@needs_sandbox
def test_the_same_notebook_and_secret_give_the_same_grade(assignment, evaluator, tmp_path):
    first = grade_one(assignment, evaluator, _student(tmp_path, "one", SHEET_2A))
    second = grade_one(assignment, evaluator, _student(tmp_path, "two", SHEET_2A))
    a, b = task_of(first, "2a"), task_of(second, "2a")
    assert a.source and "capture" in a.source
    assert (a.score, a.status, a.metrics) == (b.score, b.status, b.metrics)


@needs_sandbox
def test_hand_set_weights_earn_no_credit_for_a_trained_task(assignment, evaluator, tmp_path):
    t = task_of(grade_one(assignment, evaluator, _student(tmp_path, "h", HAND_SET_1C)), "1c")
    assert t.metrics["mse"] < 1e-6  # the exploit does fit the function...
    assert "never trained in the notebook" in t.message  # ...and earns only the architecture's share
    assert t.score == pytest.approx(10 * 0.2) and t.status == "partial"


@needs_sandbox
def test_a_learning_rate_of_zero_earns_no_credit(assignment, evaluator, tmp_path):
    t = task_of(grade_one(assignment, evaluator, _student(tmp_path, "z", LR0_2C)), "2c")
    assert "learning rate of 0" in t.message
    assert t.metrics.get("training_refused") == 1.0
    assert t.score == pytest.approx(t.max_score * assignment.task("2c").architecture_weight)  # architecture only


def test_a_saved_file_is_graded_as_submitted_and_the_report_says_so(assignment, evaluator, tmp_path, model_dir):
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    shutil.copy(model_dir / "2a.h5", folder / "2a.h5")
    result = grade_one(assignment, evaluator, tmp_path / "subs")
    assert task_of(result, "2a").status == "passed"
    assert any("graded from your saved model files as submitted. A saved file holds no record of its training"
               in n for n in result.notes)


@needs_sandbox
@pytest.mark.parametrize("seed", sorted(UNLUCKY_2C_DRAWS))
def test_the_sheets_2c_on_data_that_look_like_another_datasets_is_still_2c(assignment, evaluator, tmp_path, seed):
    import numpy as np

    from grader.harvest import identify_datasets

    # the premise: this draw alone is likelier under another dataset, so a single guess would rule out task 2c
    np.random.seed(seed)
    xs, ys = _module(TUTORIAL6 / "datasets.py").gen_simple_circular_distribution(30, scale=2)
    found = identify_datasets(assignment, xs, np.eye(2)[ys.astype(int)])
    assert found[0] == UNLUCKY_2C_DRAWS[seed] and "circle_overlap" in found, found

    # the demo's 2c cell (frank's, as the sheet writes it) on that draw
    demo = _module(TUTORIAL6 / "make_demo.py")
    script = f"# %%\n{demo.IMPORTS}\n\n# %%\nnp.random.seed({seed})\n{demo.TASK_2C}\n"
    result = grade_one(assignment, evaluator, _student(tmp_path, "c", script))
    t = task_of(result, "2c")
    assert t.status != "missing" and "capture" in t.source and "exactly" in t.message, t.message
    assert "gap" in t.metrics and "train_accuracy" in t.metrics  # measured against the overlapping data's held-out
    assert [f.task for f in result.files if "capture" in f.name] == ["2c"]


@needs_sandbox
def test_a_few_points_fitted_last_do_not_open_another_datasets_task(assignment, evaluator, tmp_path):
    result = grade_one(assignment, evaluator, _student(tmp_path, "x", XOR_THEN_FIVE_POINTS))
    assert task_of(result, "2b").status == "passed"  # the xor classifier is the student's 2b...
    c = task_of(result, "2c")
    assert c.score == 0 and c.status == "missing", c.message  # ...and no 2c: it never saw 2c's data
    assert {f.task for f in result.files if "capture" in f.name} == {"2b"}


@needs_sandbox
def test_training_on_one_class_earns_no_credit(assignment, evaluator, tmp_path):
    t = task_of(grade_one(assignment, evaluator, _student(tmp_path, "o", ONE_CLASS_2C)), "2c")
    assert t.metrics["gap"] > assignment.task("2c").threshold("gap").passing  # the exploit's gap would pass...
    assert "one class only" in t.message and t.metrics.get("training_refused") == 1.0  # ...and earns nothing
    assert t.score == pytest.approx(t.max_score * assignment.task("2c").architecture_weight)  # architecture only
