"""The files real students hand in: plain scripts, `#%%` scripts, helper modules, notebooks, saved models."""
import shutil

import nbformat
import pytest

from conftest import grade_one, needs_sandbox, task_of


#: a plain script, no cell markers, as many students hand in: 1b by hand, a mistake, then 2a
PLAIN = """import numpy as np
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Dense
from tensorflow.keras.utils import to_categorical
from tools import *

x = np.linspace(0, 1, 200)
model = Sequential()
model.add(Dense(units=3, activation='relu', input_dim=1))
model.add(Dense(units=1, activation='linear'))
model.layers[0].set_weights([np.array([[0.5, 1.75, 1.25]]), np.array([-0.05, -1.05, -1.0])])
model.layers[1].set_weights([np.array([[1], [-1], [1]]), np.array([0])])
y_pred = model.predict(x)

# a slip that used to lose every task after it
print(y_prediction)

X, y = gen_simple_circular_distribution(200)
model = Sequential()
model.add(Dense(units=4, activation='relu', input_dim=2))
model.add(Dense(units=4, activation='relu'))
model.add(Dense(units=2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer='sgd')
model.fit(X, to_categorical(y), epochs=250, batch_size=32, verbose=0)
"""

PERCENT = """#%%
import numpy as np
from keras.models import Sequential
from keras.layers import Dense
#%%
x = np.linspace(0, 1, 200)
y = np.where(x < 0.1, 0, np.where(x < 0.6, 0.5 * (x - 0.1), np.where(x <= 0.8, 0.25 - 1.25 * (x - 0.6), 0)))
model = Sequential([Dense(3, activation='relu', input_dim=1), Dense(1, activation='linear')])
model.compile(loss='mean_squared_error', optimizer='adam')
model.fit(x, y, epochs=200, batch_size=32, verbose=0)
"""

HELPER = """from keras.models import Sequential
from keras.layers import Dense


def xor_network():
    return Sequential([Dense(8, activation='relu', input_dim=2), Dense(8, activation='relu'),
                       Dense(2, activation='softmax')])
"""

NOTEBOOK_CELLS = ["from helpers import xor_network\nfrom tools import gen_xor_distribution\n"
                  "from keras.utils import to_categorical",
                  "X, y = gen_xor_distribution(200)\nmodel = xor_network()\n"
                  "model.compile(loss='categorical_crossentropy', optimizer='adam')\n"
                  "model.fit(X, to_categorical(y), epochs=100, batch_size=32, verbose=0)"]


@needs_sandbox
def test_every_file_a_student_hands_in_is_graded_and_its_fate_named(assignment, evaluator, tmp_path, model_dir):
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    (folder / "tut6_q1.py").write_text(PLAIN)
    (folder / "q2.py").write_text(PERCENT)
    (folder / "helpers.py").write_text(HELPER)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in NOTEBOOK_CELLS]),
                   folder / "work.ipynb")
    shutil.copy(model_dir / "2c.h5", folder / "2c.h5")
    result = grade_one(assignment, evaluator, tmp_path / "subs")

    fate = {f.name: f.outcome for f in result.files if "capture" not in f.name}
    assert fate["tut6_q1.py"] == fate["q2.py"] == fate["work.ipynb"] == "executed"
    assert fate["helpers.py"] == "imported"
    assert fate["2c.h5"] == "graded"
    for tid, where in (("1b", "tut6_q1.py"), ("2a", "tut6_q1.py"), ("1a", "q2.py"), ("2b", "work.ipynb"),
                       ("2c", "2c.h5")):
        t = task_of(result, tid)
        assert t.status != "missing" and t.source.startswith(where), (tid, t.source)
    plain = next(nb for nb in result.notebooks if nb["name"] == "tut6_q1.py")
    failure = plain["failures"][0]
    assert failure["error"] == "NameError"
    assert "->" in failure["source"] and "print(y_prediction)" in failure["source"]  # the failing line, marked
    assert "/work/" not in failure["traceback"] and ".venv" not in failure["traceback"]
    missing = task_of(result, "1c")  # no file made it: its line names the failing cell
    assert missing.status == "missing" and "cell 3 of tut6_q1.py failed" in missing.message
