"""The speed probe: how fast this machine runs a small, fixed, training-like workload, right now.

Its reading at calibration and at the start of a batch scale notebook time limits
(``grader.execute.limits``).  ``start`` runs it beside a command's own imports, ``probe`` takes the reading;
``PROBE_VERSION`` names the workload (readings of other versions are not compared).  The workload and why
it keys no stored measurement: docs/design/execute.md.
"""
from __future__ import annotations

import atexit
import json
import os
import statistics
import subprocess
import sys
import time

#: the workload's identity: change it whenever ``workload`` changes
PROBE_VERSION = 1
#: timed repetitions per reading (after one warm-up)
REPEATS = 7
#: SGD steps per repetition
STEPS = 1500

SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                 "VECLIB_MAXIMUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1"}


def workload(steps: int = STEPS) -> float:
    """``steps`` SGD steps of a 1-64-1 tanh network on 256 fixed points, batch 32; returns the final loss
    (so that nothing is optimised away, and as a check that the work is the same every time)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 1.0, 256, dtype=np.float32).reshape(-1, 1)
    y = (np.sin(6.0 * x) * 0.5).astype(np.float32)
    w1 = (rng.standard_normal((1, 64)) * 0.5).astype(np.float32)
    b1 = np.zeros(64, np.float32)
    w2 = (rng.standard_normal((64, 1)) * 0.1).astype(np.float32)
    b2 = np.zeros(1, np.float32)
    lr = np.float32(0.05)
    loss = 0.0
    for step in range(steps):
        lo = (step * 32) % 256
        xb, yb = x[lo:lo + 32], y[lo:lo + 32]
        h = np.tanh(xb @ w1 + b1)
        out = h @ w2 + b2
        err = out - yb
        loss = float(np.mean(err * err))
        g_out = (2.0 / len(xb)) * err
        g_w2 = h.T @ g_out
        g_h = (g_out @ w2.T) * (1.0 - h * h)
        g_w1 = xb.T @ g_h
        w2 -= lr * g_w2
        b2 -= lr * g_out.sum(0)
        w1 -= lr * g_w1
        b1 -= lr * g_h.sum(0)
    return loss


def measure(repeats: int = REPEATS) -> dict:
    """Time the workload in this process: one warm-up, then ``repeats`` timed runs."""
    workload()
    times, loss = [], 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        loss = workload()
        times.append(time.perf_counter() - t)
    return {"version": PROBE_VERSION, "seconds": statistics.median(times), "times": times, "loss": loss}


#: a reading started early (``start``) serves a ``probe`` this soon after, no later
EARLY_MAX_AGE_S = 60.0
#: the reading ``start`` began: {"run": (process, when it started, repetitions)}, until ``probe`` takes it
_early: dict = {}


def _command(repeats: int) -> tuple[list[str], dict]:
    # -P: not the working directory first on sys.path (CI runs the grader at the top of a checkout students
    # push to: a grader/ folder there would be imported, with the grading secret in the environment)
    return [sys.executable, "-P", "-m", "grader.speed_probe", str(repeats)], dict(os.environ, **SINGLE_THREAD)


def start(repeats: int = REPEATS) -> bool:
    """Start a reading now, in the background, for this process's next ``probe``: a command that will need one
    starts it before its own imports, which then run beside it on another core.  Only where this process may
    use two cores or more (on one, the imports would slow the reading down); returns whether it started."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    if cores < 2 or "run" in _early:
        return False
    cmd, env = _command(repeats)
    try:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    except OSError:
        return False
    _early["run"] = (proc, time.monotonic(), repeats)
    return True


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@atexit.register
def _discard_early() -> None:
    """At exit: an early reading nobody took is stopped."""
    run = _early.pop("run", None)
    if run is not None:
        _stop(run[0])


def _reading(stdout: str) -> float:
    return float(json.loads(stdout.strip().splitlines()[-1])["seconds"])


def probe(repeats: int = REPEATS, timeout: float = 120.0) -> float:
    """The probe's reading (seconds per repetition, the median) from a fresh single-threaded process: the one
    ``start`` began, when it is recent and of as many repetitions, else one run now."""
    early = _early.pop("run", None)
    if early is not None:
        proc, started, early_repeats = early
        if early_repeats == repeats and time.monotonic() - started <= EARLY_MAX_AGE_S:
            try:
                out, _ = proc.communicate(timeout=timeout)
                if proc.returncode == 0:
                    return _reading(out)
            except (subprocess.TimeoutExpired, ValueError, IndexError, KeyError):
                pass
        _stop(proc)
    cmd, env = _command(repeats)
    proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the speed probe failed: {proc.stderr.strip()[-500:]}")
    return _reading(proc.stdout)


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else REPEATS)))
