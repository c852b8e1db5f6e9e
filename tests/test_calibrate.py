"""Calibration states its error rate: how often a correct run misses, and the re-trainings that makes necessary."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from conftest import ROOT, TUTORIAL6
from grader.calibrate import calibrate, miss_upper_bound, retrainings_needed
from grader.errors import SpecError
from grader.session import Events
from grader.spec import load_assignment


class _Heard(Events):
    """The calibration's events: each reference run as ``(task, seed)``."""

    def __init__(self, heard: list):
        self.heard = heard

    def reference_run(self, task_id, seed, metrics):
        self.heard.append((task_id, seed))


def _copy(tmp_path):
    spec = tmp_path / "tutorial6"
    shutil.copytree(TUTORIAL6, spec, ignore=shutil.ignore_patterns("__pycache__"))
    return spec


def test_miss_rates_are_honest_upper_bounds():
    assert miss_upper_bound(0, 30) == pytest.approx(1 - 0.05 ** (1 / 30), rel=1e-9)  # the closed form at 0 misses
    assert miss_upper_bound(30, 30) == 1.0 and miss_upper_bound(0, 0) == 1.0
    assert miss_upper_bound(9, 30) > 9 / 30  # above the observed rate...
    assert miss_upper_bound(9, 30) > miss_upper_bound(90, 300) > 0.3  # ...and closer to it with more runs
    assert retrainings_needed(0.5, 0.001) == 10  # 0.5 ** 10 < 0.001 < 0.5 ** 9
    assert retrainings_needed(0.1, 0.001) == 3
    assert retrainings_needed(1.0, 0.001) is None


def test_calibrate_writes_estimates_and_k_that_tomllib_reads_back(tmp_path):
    spec = _copy(tmp_path)
    out = calibrate(spec, runs=3, tasks=["1a"])
    data = tomllib.loads(out.read_text())
    bound = data["meta"]["false_fail_bound"]
    e = data["tasks"]["1a"]["mse"]
    assert e["run_count"] == len(e["runs"]) == 3 and data["tasks"]["1a"]["seeds"] == [1000, 1001, 1002]
    assert 0 <= e["missed_partial"] <= e["missed_pass"] <= 3
    assert e["p_miss_pass"] == pytest.approx(miss_upper_bound(e["missed_pass"], 3))
    assert e["retrainings"] == retrainings_needed(e["p_miss_pass"], bound)
    assert e["false_fail"] == pytest.approx(e["p_miss_pass"] ** e["retrainings"]) and e["false_fail"] <= bound
    # the other tasks keep their runs, and their estimates are derived from them, saying how many
    before = tomllib.loads((TUTORIAL6 / "calibration.toml").read_text())["tasks"]
    for tid in ("1c", "2a"):
        metric = "mse" if tid == "1c" else "accuracy"
        kept = data["tasks"][tid][metric]
        assert kept["runs"] == before[tid][metric]["runs"] and kept["run_count"] == len(kept["runs"])
        assert kept["retrainings"] >= 1
    # a task graded on one run (weights set by hand) states its miss rate and gets no re-training
    assert data["tasks"]["1b"]["max_error"]["retrainings"] == 0
    assert re.search(r"Runs per task: 1a 3, 1b \d+", out.read_text())
    # and the spec reads it: thresholds with their miss rates
    th = load_assignment(spec).task("1a").threshold("mse")
    assert th.misses.runs == 3 and th.misses.retrainings == e["retrainings"]


def test_calibrate_measures_the_overfitting_gap_on_the_runs_training_data(tmp_path):
    # the gap needs the evaluator to know each run's training data (the worker reads "datasets")
    spec = _copy(tmp_path)
    data = tomllib.loads(calibrate(spec, runs=3, tasks=["2c"]).read_text())
    gap = data["tasks"]["2c"]["gap"]
    assert gap["run_count"] == len(gap["runs"]) == 3 and all(g > 0 for g in gap["runs"])


def test_calibrate_refuses_a_rule_that_fails_correct_recipes_too_often(tmp_path):
    spec = _copy(tmp_path)
    toml = spec / "assignment.toml"
    text = toml.read_text()
    rule = 'calibration.mse.pass = { statistic = "max", factor = 2.0 }'
    at = text.index(rule, text.index('id = "1a"'))
    assert at < text.index('id = "1b"')
    # 1a's pass threshold at half the best reference run's error: every correct run misses it
    toml.write_text(text[:at] + 'calibration.mse.pass = { statistic = "min", factor = 0.5 }' + text[at + len(rule):])
    before = (spec / "calibration.toml").read_bytes()
    with pytest.raises(SpecError, match=r"tasks\[0\] \(1a\)") as refused:
        calibrate(spec, runs=2, tasks=["1a"])
    assert "misses this pass threshold in 2 of 2 runs" in str(refused.value)
    assert (spec / "calibration.toml").read_bytes() == before  # nothing written


def test_the_shipped_calibration_bounds_every_retrained_rule():
    """calibration.toml as shipped: every re-trained task's K keeps a correct recipe's false fail under the bound."""
    assignment = load_assignment(TUTORIAL6)
    r = assignment.limits.retraining
    for task in assignment.model_tasks():
        if not task.retrained:
            continue
        m = task.threshold(task.metric).misses
        assert m is not None, task.id
        assert 1 <= m.retrainings <= r.max_per_student, task.id
        assert m.p_pass ** m.retrainings <= r.false_fail_bound, task.id
        assert m.retrainings == math.ceil(math.log(r.false_fail_bound) / math.log(m.p_pass) - 1e-12), task.id


def test_the_calibration_file_is_valid_toml_whatever_the_names_and_its_timings_survive(tmp_path):
    """Task ids and notes come from the TA's spec: quotes, backslashes and control characters must not make a
    calibration file tomllib cannot read (the hand-written writer it replaces produced one)."""
    from grader.calibrate import _write, write_timings

    path = tmp_path / "calibration.toml"
    timings = {"notebook": "solution.ipynb", "probe_s": 0.05, "jax": {"notebook_s": 12.5, "cells_s": [0.1, 2.0]}}
    write_timings(path, timings)
    tasks = {'1"a': {"points": 1.0, "note": 'a "quoted"\\ path\nand a\ttab\x01', "mse": {"runs": [0.1, 0.2],
                                                                                       "pass": math.inf}}}
    _write(path, ["header line"], {"runs": 2, "grader": "0.1.0"}, tasks)
    text = path.read_text()
    assert text.startswith("# header line\n")
    data = tomllib.loads(text)
    assert data["tasks"] == tasks and data["meta"] == {"runs": 2, "grader": "0.1.0"}
    assert data["timings"] == timings  # recorded timings are kept when thresholds are written again
    write_timings(path, None)  # no reference notebook: the timings go, the thresholds stay
    assert "timings" not in tomllib.loads(path.read_text()) and tomllib.loads(path.read_text())["tasks"] == tasks


def test_training_in_parallel_processes_gives_the_thresholds_one_process_gives(tmp_path):
    """Each task's runs train in a process of their own: the same seed trains the same network there, so the
    calibration file's runs, thresholds and estimates are those of one process, value for value."""
    one, two = tmp_path / "one", tmp_path / "two"
    for d in (one, two):
        d.mkdir()
        _copy(d)
    heard = []
    calibrate(one / "tutorial6", runs=3, tasks=["1a", "1c"], workers=1)
    calibrate(two / "tutorial6", runs=3, tasks=["1a", "1c"], workers=2,
              events=_Heard(heard))
    a = tomllib.loads((one / "tutorial6" / "calibration.toml").read_text())["tasks"]
    b = tomllib.loads((two / "tutorial6" / "calibration.toml").read_text())["tasks"]
    assert a == b
    assert heard == [(t, s) for t in ("1a", "1c") for s in (1000, 1001, 1002)]  # in the spec's order


@pytest.mark.slow
def test_a_training_process_loads_the_reference_programs_from_the_compile_cache(tmp_path):
    """Calibration's training processes train with the notebooks' XLA set-up, so the reference's programs load
    from the compile cache the batches use instead of compiling (seconds a task)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from grader.calibrate import _train_runs
    from grader.execute import compile_cache

    cache = compile_cache.build(load_assignment(TUTORIAL6))
    assert cache is not None
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        with_cache = pool.submit(_train_runs, str(TUTORIAL6), "1c", [1000, 1001], str(tmp_path), str(cache)).result()
    (tmp_path / "no").mkdir()
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        without = pool.submit(_train_runs, str(TUTORIAL6), "1c", [1000], str(tmp_path / "no"), None).result()
    assert [run[-1] for run in with_cache] == ["stored", "memory"]  # loaded once, then kept
    assert without[0][-1] == "compiled"


TRAIN_AND_TELL = """
import hashlib, json, sys, tempfile
sys.path.insert(0, {root!r})
from grader.calibrate import _train_runs
with tempfile.TemporaryDirectory() as out:
    runs = _train_runs({spec!r}, "1a", [1000], out, None)
    import keras
    weights = keras.saving.load_model(runs[0][1]).get_weights()
print("TOLD " + json.dumps({{"tensorflow": "tensorflow.python" in sys.modules,
                            "weights": hashlib.sha256(b"".join(w.tobytes() for w in weights)).hexdigest()}}))
"""


@pytest.mark.slow
def test_a_training_process_trains_and_saves_without_loading_tensorflow(tmp_path):
    """Calibration's training processes defer TensorFlow as the kernels do (saving each run's model would load
    it: about 3 s of each process's start): not loaded, and the very same weights as with it loaded
    (``GRADER_DEFERRED_TF=0``)."""
    told = {}
    for deferred in ("1", "0"):
        env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
        env["GRADER_DEFERRED_TF"] = deferred
        done = subprocess.run([sys.executable, "-c", TRAIN_AND_TELL.format(root=str(ROOT), spec=str(TUTORIAL6))],
                              env=env, capture_output=True, text=True, timeout=600)
        assert "TOLD " in done.stdout, done.stderr[-2000:]
        told[deferred] = json.loads(done.stdout.split("TOLD ")[1])
    assert told["1"]["tensorflow"] is False and told["0"]["tensorflow"] is True
    assert told["1"]["weights"] == told["0"]["weights"]
