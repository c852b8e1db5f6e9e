"""Fairness: the sheet's own 2a recipe earns full marks whatever the grading secret.

    python bench/bench_fairness.py [--secrets 8]

Grades the sheet's task 2a, written as a student writes it (an unseeded
``# %%`` script: no seed anywhere), under N different grading secrets.  Each
secret seeds the student's run differently (``measure.student.run_seed``), so
some runs get stuck at the majority class as training sometimes does; the
grader then re-trains the recipe (``grader.retrain``, as ``retrain.plan`` plans) and
grades the recipe.  Everything is real: the sandboxed kernel, the evaluation
and training workers.  Prints, per secret, the student's own accuracy, the
re-trainings and the 2a score, then how many secrets gave full marks; exits 1
unless all did.  Slow (about a minute per secret on 2 cores): a benchmark, not
a test.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secrets", type=int, default=8)
    args = parser.parse_args()

    from grader.evaluate import Evaluator, dataset_seeds
    from grader.intake import collect
    from grader.session import grade_student
    from grader.spec import load_assignment

    assignment = load_assignment(ROOT / "reference" / "tutorial6")
    with tempfile.TemporaryDirectory(prefix="bench-fairness-") as tmp:
        folder = Path(tmp) / "subs"
        (folder / "student").mkdir(parents=True)
        (folder / "student" / "work.py").write_text(SHEET_2A)
        (submission,) = collect(folder, assignment)
        full = 0
        for i in range(args.secrets):
            secret = f"fairness-{i}"
            t0 = time.monotonic()
            with Evaluator(assignment, dataset_seeds(assignment, secret)) as evaluator:
                result = grade_student(assignment, submission, evaluator)
            t = next(t for t in result.tasks if t.id == "2a")
            full += t.score == t.max_score
            retrained = t.metrics.get("retrained_accuracy")
            print(f"secret {secret}: own run accuracy {t.metrics.get('accuracy', float('nan')):.3f}, "
                  f"re-trainings {int(t.metrics.get('retrainings', 0))}"
                  + (f" (best {retrained:.3f})" if retrained is not None else "")
                  + f", 2a {t.score:g}/{t.max_score:g} [{time.monotonic() - t0:.0f} s]", flush=True)
            if t.score < t.max_score:
                print(f"  {t.message}", flush=True)
    print(f"full 2a marks under {full} of {args.secrets} grading secrets")
    sys.exit(0 if full == args.secrets else 1)


if __name__ == "__main__":
    main()
