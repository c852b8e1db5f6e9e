"""Write the demo submissions (``submissions/tutorial6/``) from the reference implementations.

    python reference/tutorial6/make_demo.py [OUT]

Students, each showing one thing a TA meets:
  alice/   strong: every task, mostly named by file (1a.h5 ...), one left for
           the grader to infer (circles.keras), model.h5 for task 3
  bob/     weak: his "1c" is the 1a network (3 ReLUs, 200 epochs), as the
           sheet says such a network fits poorly
  carol/   a corrupt file (a truncated 2a.h5) next to a good 1c.h5
  dave/    task 2a with its two outputs swapped (the course's known mistake)
  erin_1b.h5  a lone file at the top level: student "erin", task 1b
  frank/   the path most students take: a sheet-style notebook (1a, 1b, 2a, 2c and
           model.h5), unseeded, as students write it
  grace/   a plain script without cell markers (tut6_q1.py): 1b, 2a and xor for 2b
  heidi/   a Keras 2 notebook (Adam(lr=...)): it runs on Keras 2 (tf_keras) and earns its marks
Seeds are the calibration's reference seeds, so the files are reproducible.
"""
from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


import nbformat  # noqa: E402

import solution  # noqa: E402

IMPORTS = """import numpy as np
import matplotlib.pyplot as plt
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Dense
from tensorflow.keras.utils import to_categorical
from tools import *"""

CURVE = """x = np.linspace(0, 1, 200)
y = x.copy()
y[x < 0.1] = 0
y[x >= 0.1] = 0.5*(x[x >= 0.1] - 0.1)
y[x >= 0.6] = 0.25 - 0.25/0.2*(x[x >= 0.6] - 0.6)
y[x > 0.8] = 0"""

TASK_1A = """model = Sequential()
model.add(Dense(units=3, activation='relu', input_dim=1))
model.add(Dense(units=1, activation='linear'))
model.compile(loss='mean_squared_error', optimizer='adam')
model.fit(x, y, epochs=200, batch_size=32, verbose=0)
y_pred = model.predict(x)"""

TASK_1B = """model = Sequential()
model.add(Dense(units=3, activation='relu', input_dim=1))
model.add(Dense(units=1, activation='linear'))
model.layers[0].set_weights([np.array([[0.5, 1.75, 1.25]]), np.array([-0.05, -1.05, -1.0])])
model.layers[1].set_weights([np.array([[1], [-1], [1]]), np.array([0])])
y_pred = model.predict(x)
plt.plot(x, y, x, y_pred)"""

TASK_2A = """X, y2 = gen_simple_circular_distribution(200)
model = Sequential()
model.add(Dense(units=4, activation='relu', input_dim=2))
model.add(Dense(units=4, activation='relu'))
model.add(Dense(units=2, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer='sgd')
model.fit(X, to_categorical(y2), epochs=250, batch_size=32, verbose=0)"""

TASK_2C = """Xs, ys = gen_simple_circular_distribution(30, scale=2)
model2c = Sequential()
model2c.add(Dense(units=6, activation='relu', input_dim=2))
model2c.add(Dense(units=6, activation='relu'))
model2c.add(Dense(units=6, activation='relu'))
model2c.add(Dense(units=2, activation='softmax'))
model2c.compile(loss='categorical_crossentropy', optimizer='adam')
model2c.fit(Xs, to_categorical(ys), epochs=1000, batch_size=32, verbose=0)"""

TASK_2B_XOR = """Xx, yx = gen_xor_distribution(200)
xor = Sequential()
xor.add(Dense(units=8, activation='relu', input_dim=2))
xor.add(Dense(units=8, activation='relu'))
xor.add(Dense(units=2, activation='softmax'))
xor.compile(loss='categorical_crossentropy', optimizer='adam')
xor.fit(Xx, to_categorical(yx), epochs=200, batch_size=32, verbose=0)"""

KERAS2_1A = """from tensorflow.keras.optimizers import Adam
model = Sequential()
model.add(Dense(units=3, activation='relu', input_dim=1))
model.add(Dense(units=1, activation='linear'))
model.compile(loss='mean_squared_error', optimizer=Adam(lr=0.01))
model.fit(x, y, epochs=200, batch_size=32, verbose=0)"""


def notebook(*cells):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


def seeds():
    cal = tomllib.loads((HERE / "calibration.toml").read_text())["tasks"]
    return {tid: entry["reference_seed"] for tid, entry in cal.items()}


def main(out: Path):
    seed = seeds()
    trained = {}

    def model(task):
        if task not in trained:
            trained[task] = getattr(solution, f"task_{task}")(seed[task])[0]
        return trained[task]

    if out.exists():
        shutil.rmtree(out)
    alice = out / "alice"
    alice.mkdir(parents=True)
    for task in ("1a", "1b", "1c", "1d", "1e", "1f", "2b", "2c", "4"):
        model(task).save(alice / f"{task}.h5")
    model("2a").save(alice / "circles.keras")  # no task in the name: inferred
    model("2a").save(alice / "model.h5")       # task 3

    bob = out / "bob"
    bob.mkdir()
    model("1a").save(bob / "1a.h5")
    model("1a").save(bob / "1c.h5")  # the 3-ReLU network where 150 ReLUs were asked for
    model("2a").save(bob / "2a.h5")

    carol = out / "carol"
    carol.mkdir()
    model("1c").save(carol / "1c.h5")
    model("2a").save(carol / "2a.h5")
    data = (carol / "2a.h5").read_bytes()
    (carol / "2a.h5").write_bytes(data[: len(data) // 3])  # an interrupted upload

    dave = out / "dave"
    dave.mkdir()
    swapped = solution.task_2a(seed["2a"])[0]
    kernel, bias = swapped.layers[-1].get_weights()
    swapped.layers[-1].set_weights([kernel[:, ::-1], bias[::-1]])
    swapped.save(dave / "2a.h5")
    model("1c").save(dave / "1c.h5")

    model("1b").save(out / "erin_1b.h5")

    (out / "frank").mkdir()
    nbformat.write(notebook(IMPORTS, CURVE, TASK_1A, TASK_1B, TASK_2A, TASK_2C, "model.save('model.h5')"),
                   out / "frank" / "tutorial6.ipynb")
    (out / "grace").mkdir()
    (out / "grace" / "tut6_q1.py").write_text("\n\n".join([IMPORTS, CURVE, TASK_1B, TASK_2A, TASK_2B_XOR]) + "\n")
    (out / "heidi").mkdir()
    nbformat.write(notebook(IMPORTS, CURVE, KERAS2_1A, TASK_2A), out / "heidi" / "tutorial6.ipynb")
    print(f"demo submissions written to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent.parent / "submissions" / "tutorial6")
