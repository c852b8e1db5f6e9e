"""Evaluation speed: calling the model directly vs model.predict, side by side.

    python bench/bench_evaluate.py [--repeat 7]

Loads the demo's 2a model in this process (TensorFlow backend, as the
evaluation worker does) and times both ways of computing its outputs on the
40,000 points of a decision-region grid, interleaved so machine noise hits
both alike.  Prints the medians and their ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    from grader import keras_io

    model = keras_io.load(ROOT / "submissions" / "tutorial6" / "bob" / "2a.h5")
    gx, gy = np.meshgrid(np.linspace(-10, 10, 200), np.linspace(-10, 10, 200))
    x = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float32)
    keras_io.predict(model, x)
    model.predict(x, verbose=0)  # warm both paths
    direct, predict = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        a = keras_io.predict(model, x)
        direct.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = model.predict(x, verbose=0)
        predict.append(time.perf_counter() - t)
    assert np.allclose(a, b, atol=1e-6)
    md, mp = statistics.median(direct), statistics.median(predict)
    print(f"points: {len(x)}, repeats: {args.repeat}")
    print(f"model(x) via keras_io.predict: median {md * 1000:.1f} ms")
    print(f"model.predict:                 median {mp * 1000:.1f} ms")
    print(f"ratio predict / direct: {mp / md:.1f}x")


if __name__ == "__main__":
    main()
