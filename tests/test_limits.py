"""Notebook time limits from the reference notebook's timings and this machine's speed probe.

The derivation is a pure function, tested with numbers; the calibration's timing table is written and
read back; the measure key rests on the spec and the calibrated timings, never on the probe's reading;
and an endless loop in a real sandboxed notebook is stopped with a message that states the derived limit
(a small limit the spec sets, so that no assertion depends on how loaded the machine is).
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tomllib

import nbformat
import pytest

from conftest import ROOT, TUTORIAL6, needs_sandbox
from grader import speed_probe
from grader.calibrate import calibrate, calibrate_timings, timing_section, write_timings
from grader.errors import SpecError
from grader.execute.diagnose import explain
from grader.execute.limits import SCALE_BOUNDS, batch_limits, derive, probe_scale, time_limits
from grader.execute.runner import CellRun
from grader.spec import load_assignment
from grader.spec.model import BackendTimings, NotebookSettings, Timings
from grader.store import keys


SETTINGS = NotebookSettings(cell_timeout_s=240, notebook_timeout_s=1200, cell_limit_factor=3,
                            notebook_limit_factor=2, min_cell_limit_s=30, min_notebook_limit_s=120)


def _timings(slowest=15.0, notebook=100.0, probe_s=0.1, backends=("jax",)):
    return Timings("solution.ipynb", "", probe_s, speed_probe.PROBE_VERSION,
                   tuple(BackendTimings(b, 3, notebook, slowest, 10, (1.0, slowest)) for b in backends))


# -- the derivation, with numbers ---------------------------------------------------------------------------

def test_derive_factor_timing_scale_floor_cap():
    assert derive(3, 15.0, 1.0, 30, 240) == (45.0, "reference")       # 3 x 15 s
    assert derive(3, 15.0, 2.0, 30, 240) == (90.0, "reference")       # a machine twice as slow
    assert derive(3, 15.1, 1.0, 30, 240) == (46.0, "reference")       # whole seconds, rounded up
    assert derive(3, 5.0, 1.0, 30, 240) == (30.0, "minimum")          # 15 s is below the floor
    assert derive(3, 100.0, 1.0, 30, 240) == (240.0, "maximum")       # 300 s is above the cap
    assert derive(3, 1.0, 1.0, 30, 20) == (20.0, "minimum")           # a cap below the floor wins


def test_probe_scale_is_clamped():
    assert probe_scale(0.103, 0.1) == pytest.approx(1.03)
    assert probe_scale(10.0, 0.1) == SCALE_BOUNDS[1] == 8.0           # a freak slow reading
    assert probe_scale(0.001, 0.1) == SCALE_BOUNDS[0] == 0.5          # a freak fast one


def test_time_limits_from_the_reference_and_why():
    lim = time_limits(SETTINGS, _timings(slowest=15.0, notebook=100.0), "jax", 1.0)
    assert (lim.cell.seconds, lim.notebook.seconds) == (45.0, 200.0)
    assert lim.cell.why == "3× the reference solution's slowest cell, which takes 15 s on this machine"
    assert lim.notebook.why == "2× the reference solution's whole notebook, which takes 100 s on this machine"
    slow = time_limits(SETTINGS, _timings(slowest=15.0, notebook=100.0), "jax", 1.5)
    assert (slow.cell.seconds, slow.notebook.seconds) == (68.0, 300.0)  # ceil(67.5), 2 x 150
    floor = time_limits(SETTINGS, _timings(slowest=2.0, notebook=20.0), "jax", 1.0)
    assert (floor.cell.seconds, floor.notebook.seconds) == (30.0, 120.0)
    assert floor.cell.why.startswith("the grader's minimum (min_cell_limit_s); 3× the reference solution's "
                                     "slowest cell, 2.0 s on this machine, would be less")
    cap = time_limits(SETTINGS, _timings(slowest=200.0, notebook=1000.0), "jax", 1.0)
    assert (cap.cell.seconds, cap.notebook.seconds) == (240.0, 1200.0)
    assert cap.cell.why.startswith("the assignment's maximum (cell_timeout_s)")


def test_fixed_limits_when_fixed_or_nothing_to_derive_from():
    fixed = dataclasses.replace(SETTINGS, time_limits="fixed")
    for settings, timings, backend, scale, reason in [
            (fixed, _timings(), "jax", 1.0, ""),
            (SETTINGS, None, "jax", 1.0, "no timings of a reference notebook"),
            (SETTINGS, _timings(backends=("jax",)), "tensorflow", 1.0, "on the tensorflow backend"),
            (SETTINGS, _timings(), "jax", None, "could not be compared")]:
        lim = time_limits(settings, timings, backend, scale)
        assert (lim.cell.seconds, lim.notebook.seconds) == (240, 1200)
        assert lim.cell.why.startswith("set by the assignment, cell_timeout_s") and reason in lim.cell.why


def test_batch_limits_run_the_probe_once_and_only_when_needed(tmp_path):
    a = dataclasses.replace(load_assignment(TUTORIAL6), notebooks=SETTINGS, timings=_timings(probe_s=0.1))
    readings = []

    def probe():
        readings.append(0.2)
        return 0.2

    limits = batch_limits(a, probe=probe)
    assert readings == [0.2] and limits.scale == 2.0
    assert limits.for_backend("jax").cell.seconds == 90.0           # 3 x 15 s x 2
    assert limits.for_backend("tensorflow").cell.seconds == 240     # no tensorflow timings: fixed
    assert "jax: cell 90 s" in limits.describe() and "scale 2.00" in limits.describe()
    fixed = dataclasses.replace(a, notebooks=dataclasses.replace(SETTINGS, time_limits="fixed"))
    assert batch_limits(fixed, probe=probe).probe_s is None and readings == [0.2]  # no probe for fixed limits
    old = dataclasses.replace(a, timings=dataclasses.replace(a.timings, probe_version=0))
    stale = batch_limits(old, probe=probe)
    assert stale.for_backend("jax").cell.seconds == 240 and "speed probe changed" in stale.notes[0]


def test_timeout_messages_state_the_limit_and_where_it_comes_from():
    lim = time_limits(SETTINGS, _timings(slowest=15.0, notebook=100.0), "jax", 1.0)
    cell = CellRun(4, "while True: pass", "timeout", "CellTimeout", "", "", 52.0, 45.0, "cell", 47.2)
    assert explain(cell, limits=lim).startswith(
        "Stopped after 47 s: the grader's limit for a cell is 45 s (3× the reference solution's slowest cell, "
        "which takes 15 s on this machine).")
    ran_out = dataclasses.replace(cell, limited_by="notebook", stopped_s=31.0)
    assert explain(ran_out, limits=lim).startswith(
        "Stopped after 31 s: the notebook reached its time limit of 200 s (2× the reference solution's whole "
        "notebook, which takes 100 s on this machine)")


# -- the probe ------------------------------------------------------------------------------------------------

def test_the_probe_does_the_same_work_every_time():
    assert speed_probe.workload(200) == speed_probe.workload(200)   # deterministic: the same loss
    assert speed_probe.probe(repeats=2) > 0                         # a real reading from a fresh process


# -- the spec and the calibration file ----------------------------------------------------------------------

def _set(toml, **values):
    """Set ``[notebooks]`` keys the spec already has (each once)."""
    text = toml.read_text()
    for key, value in values.items():
        text, n = re.subn(rf"\n{key} = [^\n]+", f"\n{key} = {value}", text)
        assert n == 1, key
    toml.write_text(text)


def _copy(tmp_path, name="tutorial6"):
    spec = tmp_path / name
    shutil.copytree(ROOT / "reference" / name, spec, ignore=shutil.ignore_patterns("__pycache__"))
    return spec


TABLE = {"notebook": "solution.ipynb", "notebook_sha256": "", "recorded": "2026-01-01", "probe_version": 1,
         "probe_s": 0.1, "probe_readings": [0.1, 0.1],
         "jax": {"runs": 3, "notebook_s": 60.5, "slowest_cell_s": 20.25, "slowest_cell": 9, "cells": [2, 4, 9],
                 "cells_s": [5.0, 1.0, 20.25], "notebook_runs_s": [60.0, 60.5, 61.0]}}


def test_spec_settings_and_timings_are_read_and_validated(tmp_path):
    spec = _copy(tmp_path)
    write_timings(spec / "calibration.toml", TABLE)
    toml = spec / "assignment.toml"
    text = toml.read_text()
    _set(toml, cell_limit_factor="4", min_cell_limit_s="20", time_limits='"reference"')
    a = load_assignment(spec)
    assert (a.notebooks.cell_limit_factor, a.notebooks.min_cell_limit_s) == (4.0, 20.0)
    assert a.timings.get("jax") == BackendTimings("jax", 3, 60.5, 20.25, 9, (5.0, 1.0, 20.25))
    assert a.timings.get("tensorflow") is None and a.timings.probe_s == 0.1
    for bad in [{"time_limits": '"magic"'}, {"min_cell_limit_s": "1000"}, {"cell_limit_factor": "-1"}]:
        toml.write_text(text)
        _set(toml, **bad)
        with pytest.raises(SpecError, match=re.escape(f"notebooks.{next(iter(bad))}")):
            load_assignment(spec)
    toml.write_text(text.replace("\nmin_cell_limit_s = 30", ""))
    assert load_assignment(spec).notebooks.min_cell_limit_s == NotebookSettings().min_cell_limit_s  # the default


def test_the_key_rests_on_factors_and_timings_not_on_the_probe(tmp_path):
    spec = _copy(tmp_path)
    cal = spec / "calibration.toml"
    write_timings(cal, TABLE)
    seeds = {"curve": 1}
    base = keys.measure_fingerprint(load_assignment(spec), seeds)
    # what does not change a limit: the readings behind the probe's median, the date, the cells' list
    write_timings(cal, {**TABLE, "recorded": "2027-01-01", "probe_readings": [0.09, 0.11],
                        "jax": {**TABLE["jax"], "cells_s": [4.0, 2.0, 20.25]}})
    assert keys.measure_fingerprint(load_assignment(spec), seeds) == base
    # and the probe's reading when grading is no input of the key at all: limits differ, the key does not
    a = load_assignment(spec)
    quick, slow = batch_limits(a, probe=lambda: 0.1), batch_limits(a, probe=lambda: 0.13)
    assert quick.for_backend("jax").cell.seconds != slow.for_backend("jax").cell.seconds
    assert keys.measure_fingerprint(a, seeds) == base
    # what does: re-recorded timings, the calibration's probe reading, a factor, the mode
    for table in ({**TABLE, "jax": {**TABLE["jax"], "slowest_cell_s": 25.0}}, {**TABLE, "probe_s": 0.2}):
        write_timings(cal, table)
        assert keys.measure_fingerprint(load_assignment(spec), seeds) != base
    write_timings(cal, TABLE)
    for setting in ({"cell_limit_factor": 4.0}, {"time_limits": "fixed"}):
        changed = dataclasses.replace(a, notebooks=dataclasses.replace(a.notebooks, **setting))
        assert keys.measure_fingerprint(changed, seeds) != base


@pytest.mark.slow
def test_thresholds_calibration_keeps_the_timings(tmp_path):
    spec = _copy(tmp_path)
    cal = spec / "calibration.toml"
    write_timings(cal, TABLE)
    section = timing_section(cal)
    assert section and tomllib.loads(cal.read_text())["timings"]["jax"]["slowest_cell_s"] == 20.25
    calibrate(spec, runs=2, tasks=["1b"])  # the hand-set task: no training
    assert timing_section(cal) == section
    assert tomllib.loads(cal.read_text())["tasks"]["1b"]["max_error"]["run_count"] == 2


def test_no_reference_notebook_no_timings_fixed_limits(tmp_path):
    spec = _copy(tmp_path, "coursework")
    before = sorted(p.name for p in spec.iterdir())
    out, table = calibrate_timings(spec, runs=1)
    assert table is None and sorted(p.name for p in spec.iterdir()) == before  # nothing written
    a = load_assignment(spec)
    assert a.timings is None
    limits = batch_limits(a, probe=lambda: pytest.fail("no probe without timings"))
    assert limits.for_backend(a.notebooks.backend).cell.seconds == a.notebooks.cell_timeout_s


QUICK_REFERENCE = [nbformat.v4.new_markdown_cell("# a reference"), nbformat.v4.new_code_cell("import numpy as np"),
                   nbformat.v4.new_code_cell("x = np.arange(10).sum()"), nbformat.v4.new_markdown_cell("end"),
                   nbformat.v4.new_code_cell("print(x)")]


@pytest.mark.slow
@needs_sandbox
def test_calibrate_records_the_reference_notebooks_timings(tmp_path):
    """On a copy whose reference notebook is three quick cells: the table is written by the grader's own
    executor on both backends asked for, tomllib reads it back, the spec loads it, the thresholds stay; the
    default times the spec's backend alone."""
    spec = _copy(tmp_path)
    nbformat.write(nbformat.v4.new_notebook(cells=QUICK_REFERENCE), spec / "solution.ipynb")
    cal = spec / "calibration.toml"
    tasks_before = tomllib.loads(cal.read_text())["tasks"]
    out, table = calibrate_timings(spec, runs=2, backends=["jax", "tensorflow"])
    data = tomllib.loads(out.read_text())
    assert data["tasks"] == tasks_before
    t = data["timings"]
    assert t["notebook"] == "solution.ipynb" and t["probe_version"] == speed_probe.PROBE_VERSION
    assert len(t["probe_readings"]) == 1 + 2 * 2 and t["probe_s"] > 0
    for backend in ("jax", "tensorflow"):
        b = t[backend]
        assert b["runs"] == 2 and len(b["notebook_runs_s"]) == 2
        assert b["cells"] == [2, 3, 5]  # the code cells' positions, as reports number them
        # the slowest cell's own time is the largest (two cells may tie once rounded to milliseconds)
        assert b["slowest_cell_s"] == max(b["cells_s"]) == b["cells_s"][b["cells"].index(b["slowest_cell"])]
        assert b["notebook_s"] >= b["slowest_cell_s"]  # the whole notebook holds its cells
    a = load_assignment(spec)
    assert a.timings.get("tensorflow").runs == 2 and a.timings.probe_s == t["probe_s"]
    out, table = calibrate_timings(spec, runs=1)
    assert [k for k, v in table.items() if isinstance(v, dict)] == ["jax"]
    assert "tensorflow" not in tomllib.loads(out.read_text())["timings"]


@pytest.mark.slow
@needs_sandbox
def test_an_endless_loop_is_stopped_at_the_derived_limit_and_told_so(tmp_path):
    """A batch with the real probe: timings so small that the spec's minimum decides the limit whatever the
    probe reads (3 x 0.01 s x at most 8 < 5 s), so the message is certain; the next cell runs after it."""
    from grader.pipeline import grade_batch

    spec = _copy(tmp_path)
    write_timings(spec / "calibration.toml", {**TABLE, "jax": {**TABLE["jax"], "slowest_cell_s": 0.01}})
    toml = spec / "assignment.toml"
    _set(toml, cell_timeout_s="60", time_limits='"reference"', cell_limit_factor="3", min_cell_limit_s="5")
    subs = tmp_path / "subs" / "looper"
    subs.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("while True:\n    pass"),
                                                   nbformat.v4.new_code_cell("print('after the loop')")]),
                   subs / "work.ipynb")
    grade_batch(tmp_path / "subs", spec, tmp_path / "out", workers=1)
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    nb = data["students"][0]["notebooks"][0]
    assert nb["cells_failed"] == 1 and nb["cells_run"] == 2 and nb["kernel_restarts"] == 1
    failure = nb["failures"][0]
    assert failure["cell"] == 1 and failure["status"] == "timeout"
    assert re.match(r"Stopped after \d+(\.\d)? s: the grader's limit for a cell is 5\.0 s \(the grader's minimum "
                    r"\(min_cell_limit_s\); 3× the reference solution's slowest cell, [\d.]+ s on this machine, "
                    r"would be less\)\.", failure["explanation"]), failure["explanation"]
    # the limits actually used: in the student's record, in results.json and in the TA's log
    assert nb["limits"]["cell_s"] == 5.0 and nb["limits"]["backend"] == "jax"
    assert data["time_limits"]["backends"]["jax"]["cell_s"] == 5.0 and data["time_limits"]["probe_s"] > 0
    assert "notebook time limits: jax: cell 5.0 s" in (tmp_path / "out" / "grader.log").read_text()


@pytest.mark.slow
@needs_sandbox
def test_a_derived_limit_is_told_with_its_factor(tmp_path):
    """The same loop run directly with limits derived for a given probe scale (the factor decides, not a
    floor or cap): the message names the factor and the reference's time on this machine; the notebook
    goes on after it in a fresh kernel."""
    from grader.execute import execute_notebook
    from grader.execute.limits import BACKENDS, BatchLimits
    from grader.harvest import Harvester
    from grader.intake import collect_one

    a = load_assignment(TUTORIAL6)
    settings = dataclasses.replace(a.notebooks, cell_limit_factor=3, min_cell_limit_s=1)
    lim = time_limits(settings, _timings(slowest=2.0), "jax", 1.0)
    assert lim.cell.seconds == 6.0
    path = tmp_path / "loop.ipynb"
    cells = ["x = 1", "while True:\n    pass", "raise ValueError(f'after the loop, x is {x}')"]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)
    sub = collect_one(path, a, "s")
    with execute_notebook(a, sub.files[0], None, harvester=Harvester(a),
                          limits=BatchLimits(tuple((b, lim) for b in BACKENDS))) as ex:
        failures = ex.failures
    assert failures[0]["cell"] == 2 and failures[0]["status"] == "timeout"
    assert "the grader's limit for a cell is 6.0 s (3× the reference solution's slowest cell, which takes 2.0 s " \
           "on this machine)" in failures[0]["explanation"]
    # the cell after it ran in a fresh kernel (no x), and its own failure was seen: the stopped cell's output
    # reader did not take the next cell's output
    assert failures[1]["cell"] == 3 and failures[1]["error"] == "NameError" and len(failures) == 2


@pytest.mark.slow
@needs_sandbox
def test_a_notebook_that_trains_on_tf_data_pipelines_gets_limits_for_keras_own_loop(tmp_path):
    """Keras' fit iterates a tf.data pipeline batch by batch (the fused fit takes arrays): 25x the reference's
    slowest cell for the sheet's 1c.  A notebook that makes one runs under the reference's times the dataset
    factor, and says so; the same cell under the plain limit would have been stopped."""
    from grader.execute import execute_notebook
    from grader.execute.limits import (BACKENDS, DATASET_LOOP_FACTOR, DATASETS, BatchLimits,
                                       trains_on_datasets)
    from grader.harvest import Harvester
    from grader.intake import collect_one

    a = load_assignment(TUTORIAL6)
    settings = dataclasses.replace(a.notebooks, cell_limit_factor=3, min_cell_limit_s=1)
    plain = time_limits(settings, _timings(slowest=0.05), "jax", 1.0)
    datasets = time_limits(settings, _timings(slowest=0.05), "jax", 1.0, DATASET_LOOP_FACTOR, loop_why=DATASETS)
    assert plain.cell.seconds == 1.0 and datasets.cell.seconds == 8.0
    limits = BatchLimits(tuple((b, plain) for b in BACKENDS) + ((DATASETS, datasets),))
    assert limits.for_datasets("jax") is datasets and limits.for_datasets("tensorflow") is plain
    # a pipeline made in any of the usual ways is read as one; training on arrays is not
    assert all(trains_on_datasets([code]) for code in (
        "ds = tf.data.Dataset.from_tensor_slices((X, y)).batch(32)", "from tensorflow.data import Dataset",
        "train = keras.utils.image_dataset_from_directory('pics')", "ds = tfds.load('mnist')"))
    assert not trains_on_datasets(["import tensorflow as tf\nmodel.fit(X, y, epochs=10)", "data = load()"])
    path = tmp_path / "pipeline.ipynb"
    cells = ["x = 1  # the data: train_ds = tf.data.Dataset.from_tensor_slices((X, y)).shuffle(200).batch(32)",
             "import time\ntime.sleep(3)\nprint('trained')"]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)
    sub = collect_one(path, a, "s")
    with execute_notebook(a, sub.files[0], None, harvester=Harvester(a), limits=limits) as ex:
        failures, used = ex.failures, ex.limits
    assert failures == [] and used.cell.seconds == 8.0, failures
    assert f"×{DATASET_LOOP_FACTOR} for Keras' own loop over a pipeline" in used.cell.why


def test_a_reading_started_early_is_the_one_probe_returns(monkeypatch):
    """``grade`` starts the probe before its own imports; the limits take that reading, and run no other."""
    if not speed_probe.start(repeats=2):
        pytest.skip("this process may use one core only: the probe is never started early there")
    early = speed_probe._early["run"][0]

    def no_second_run(*a, **kw):
        raise AssertionError("the probe ran again instead of taking the early reading")

    monkeypatch.setattr(speed_probe.subprocess, "run", no_second_run)
    assert speed_probe.probe(repeats=2) > 0
    assert early.returncode == 0 and "run" not in speed_probe._early


def test_an_early_reading_too_old_or_of_other_repeats_is_not_taken(monkeypatch):
    runs = []
    real_run = speed_probe.subprocess.run
    monkeypatch.setattr(speed_probe.subprocess, "run", lambda *a, **kw: runs.append(a) or real_run(*a, **kw))
    for stale in ({"started": -10**6}, {"repeats": 3}):
        if not speed_probe.start(repeats=2):
            pytest.skip("this process may use one core only: the probe is never started early there")
        early, started, repeats = speed_probe._early["run"]
        run = {"started": started, "repeats": repeats, **stale}
        speed_probe._early["run"] = (early, run["started"], run["repeats"])
        assert speed_probe.probe(repeats=2) > 0
        assert early.poll() is not None  # stopped, not left behind
    assert len(runs) == 2  # each time a reading of its own
