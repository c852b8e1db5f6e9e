"""How many epochs one compiled program should run: dispatch overhead against compile time.

    python bench/bench_fused_chunks.py [--repeat 3] [--epochs 2000]

Task 1c as the sheet writes it (150 ReLUs, 200 points, batch 32, adam) under the kernel's XLA flags:
Keras' own fit, then the fused fit with programs of 1 epoch (one dispatch per epoch, a Python loop),
8, 32 and 128 epochs (masked past the fit's last).  For each: the seconds to compile the program (its
first fit, from scratch) and the medians of the training time once compiled, and of the whole fit.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.execute.compile_cache import KERNEL_XLA_ENV  # noqa: E402

for _k, _v in {**KERNEL_XLA_ENV, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}.items():
    os.environ[_k] = _v


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2000)
    args = parser.parse_args()
    import keras
    import numpy as np

    from grader.execute import fused_fit

    x = np.linspace(0, 1, 200)
    y = np.where(x < 0.1, 0.0, 0.5 * (x - 0.1))
    y[x >= 0.6] = 0.25 - 0.25 / 0.2 * (x[x >= 0.6] - 0.6)
    y[x > 0.8] = 0

    def model(seed):
        keras.utils.set_random_seed(seed)
        m = keras.Sequential([keras.Input((1,)), keras.layers.Dense(150, activation="relu"), keras.layers.Dense(1)])
        m.compile(loss="mean_squared_error", optimizer="adam")
        return m

    rows = []
    keras_times = []
    for r in range(args.repeat):
        m = model(r)
        t = time.perf_counter()
        fused_fit.keras_fit()(m, x, y, epochs=args.epochs, batch_size=32, verbose=0)
        keras_times.append(time.perf_counter() - t)
        print(f"keras fit {keras_times[-1]:.2f} s", file=sys.stderr, flush=True)
    for chunk in (1, 8, 32, 128):
        fused_fit._MAX_CHUNK = chunk
        fused_fit._state["programs"].clear()
        compile_s, train, whole = None, [], []
        for r in range(args.repeat + 1):
            m = model(r)
            t = time.perf_counter()
            fused_fit.fit(m, x, y, epochs=args.epochs, batch_size=32, verbose=0)
            elapsed = time.perf_counter() - t
            report = fused_fit.last_report
            assert report["fused"], report
            if r == 0:
                compile_s = report["fused_compile_s"]
            else:
                train.append(report["fused_train_s"])
                whole.append(elapsed)
        rows.append((chunk, compile_s, statistics.median(train), statistics.median(whole)))
        print(f"chunk {chunk}: compile {compile_s:.2f} s, train {rows[-1][2]:.3f} s", file=sys.stderr, flush=True)
    print(f"\n{args.epochs} epochs of task 1c (150 ReLUs, 200 points, batch 32, adam), medians of {args.repeat}:")
    print(f"  Keras' own fit: {statistics.median(keras_times):.2f} s per fit")
    print(f"  {'epochs/program':>14s} {'compile (first fit)':>20s} {'training':>10s} {'whole fit, compiled':>20s}")
    for chunk, compile_s, train, whole in rows:
        print(f"  {chunk:14d} {compile_s:18.2f} s {train:8.3f} s {whole:18.3f} s")


if __name__ == "__main__":
    main()
