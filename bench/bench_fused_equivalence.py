"""Fused training vs Keras' own fit, as distributions: every fitted reference task of an assignment.

    python bench/bench_fused_equivalence.py [--seeds 20] [--tasks 1c 2a] [--assignment reference/tutorial6]

For each task whose reference is trained (``training = "fit"``), over ``--seeds`` seeds, the reference
(``solution.py``) is trained twice per seed, interleaved so machine noise hits both alike: with Keras'
own ``fit`` (on JAX) and with the fused fit (``grader.execute.fused_fit``).  Each trained model is
evaluated exactly as calibration evaluates a run (saved to .h5, measured by the evaluation worker on
held-out data drawn from the calibration secret).  Per task it prints the medians of the final training
loss and of the task's held-out metric side by side with a two-sample test of each at 1% (Mann-Whitney U
and Kolmogorov-Smirnov, scipy.stats), how many of the seeds gave bit-identical weights, and the medians
of the wall time of one training (the fused one once its program is compiled; the first, compiling, run
in brackets).  Slow: every Keras run of a 2000-epoch task takes seconds to tens of seconds.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
ALPHA = 0.01


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--assignment", default=str(ROOT / "reference" / "tutorial6"))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--base-seed", type=int, default=5000)
    parser.add_argument("--tasks", nargs="*")
    args = parser.parse_args()

    import logging

    import keras
    import numpy as np
    from scipy import stats

    logging.getLogger("absl").setLevel(logging.ERROR)  # "saving as HDF5 is legacy", once per run

    from grader.calibrate import CALIBRATION_SECRET_PREFIX
    from grader.evaluate import Evaluator, dataset_seeds
    from grader.execute import fused_fit
    from grader.spec import import_reference, load_assignment

    assignment = load_assignment(args.assignment)
    tasks = [t for t in assignment.model_tasks() if t.training == "fit" and t.reference
             and (not args.tasks or t.id in args.tasks)]
    seeds = [args.base_seed + i for i in range(args.seeds)]
    secret = f"{CALIBRATION_SECRET_PREFIX}-1000"
    rows = []
    started = time.monotonic()
    with Evaluator(assignment, dataset_seeds(assignment, secret)) as evaluator, \
            tempfile.TemporaryDirectory(prefix="grader-bench-fused-") as tmp:
        evaluator.start()
        for task in tasks:
            build = import_reference(assignment, task.reference)
            runs = {"keras": [], "fused": []}
            for i, seed in enumerate(seeds):
                weights = {}
                for arm in (("keras", "fused") if i % 2 == 0 else ("fused", "keras")):
                    if arm == "fused":
                        fused_fit.install()
                    else:
                        fused_fit.uninstall()
                    fused_fit.last_report.clear()
                    t0 = time.perf_counter()
                    model, (x, y) = build(seed)
                    seconds = time.perf_counter() - t0
                    if arm == "fused" and not fused_fit.last_report.get("fused"):
                        raise SystemExit(f"{task.id}: the fused fit fell back: {fused_fit.last_report}")
                    path = Path(tmp) / f"{task.id}-{seed}-{arm}.h5"
                    model.save(path)
                    metric = evaluator.evaluate(path, {"dataset": task.dataset, "x": x, "y": y})
                    metric = float(metric.datasets[task.dataset].metrics[task.metric])
                    runs[arm].append({"loss": float(model.history.history["loss"][-1]), "metric": metric,
                                      "seconds": seconds})
                    weights[arm] = model.get_weights()
                    path.unlink()
                    del model
                    keras.backend.clear_session()
                    gc.collect()
                same = all(np.array_equal(a, b) for a, b in zip(weights["keras"], weights["fused"]))
                runs["fused"][-1]["identical"] = same
                print(f"  {task.id} seed {seed}: loss {runs['keras'][-1]['loss']:.4g} / {runs['fused'][-1]['loss']:.4g}"
                      f", {task.metric} {runs['keras'][-1]['metric']:.4g} / {runs['fused'][-1]['metric']:.4g}, "
                      f"{runs['keras'][-1]['seconds']:.2f} s / {runs['fused'][-1]['seconds']:.2f} s"
                      f"{', identical' if same else ''}", file=sys.stderr, flush=True)
            rows.append((task, runs))
    fused_fit.uninstall()

    def column(runs, arm, key):
        return [r[key] for r in runs[arm]]

    def tests(a, b):
        return (float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue),
                float(stats.ks_2samp(a, b).pvalue))

    print(f"\nfused fit vs Keras' own fit, {args.seeds} seeds per task (from {args.base_seed}), "
          f"held-out data from '{secret}'; two-sample tests at {ALPHA:.0%} (Mann-Whitney U, Kolmogorov-Smirnov)")
    head = (f"{'task':4s} {'metric':8s} | {'final loss (median)':>23s} {'MW p':>6s} {'KS p':>6s} | "
            f"{'held-out metric (median)':>25s} {'MW p':>6s} {'KS p':>6s} | {'identical':>9s} | "
            f"{'seconds per training (median)':>32s}")
    print(head)
    print(f"{'':4s} {'':8s} | {'keras':>11s} {'fused':>11s} {'':13s} | {'keras':>12s} {'fused':>12s} {'':13s} | "
          f"{'':9s} | {'keras':>8s} {'fused (first)':>23s}")
    print("-" * len(head))
    verdicts = []
    for task, runs in rows:
        kl, fl = column(runs, "keras", "loss"), column(runs, "fused", "loss")
        km, fm = column(runs, "keras", "metric"), column(runs, "fused", "metric")
        ks, fs = column(runs, "keras", "seconds"), column(runs, "fused", "seconds")
        loss_p, metric_p = tests(kl, fl), tests(km, fm)
        identical = sum(r["identical"] for r in runs["fused"])
        verdicts.append(min(*loss_p, *metric_p) > ALPHA)
        print(f"{task.id:4s} {task.metric:8s} | {statistics.median(kl):11.4g} {statistics.median(fl):11.4g} "
              f"{loss_p[0]:6.3f} {loss_p[1]:6.3f} | {statistics.median(km):12.5g} {statistics.median(fm):12.5g} "
              f"{metric_p[0]:6.3f} {metric_p[1]:6.3f} | {identical:>4d} of {len(runs['fused']):<2d} | "
              f"{statistics.median(ks):8.2f} {statistics.median(fs[1:] or fs):10.2f} ({fs[0]:.2f})")
    total_k = sum(sum(column(r, "keras", "seconds")) for _, r in rows)
    total_f = sum(sum(column(r, "fused", "seconds")) for _, r in rows)
    print(f"\nno difference at {ALPHA:.0%} in {sum(verdicts)} of {len(verdicts)} tasks; all trainings: Keras "
          f"{total_k:.0f} s, fused {total_f:.0f} s ({total_k / total_f:.1f}x); bench {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
