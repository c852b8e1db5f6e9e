"""A key per stage: what a resumed or repeated batch reuses is what the same inputs would give.  Changing one input
redoes exactly the stage that reads it (a submission's bytes, the secret, a version of Keras: measured again; a
threshold or points: only re-scored; Python's patch release: nothing), decided by the batch's own planner on a
real gradebook; and every module a stage imports is held by its key, or named with the reason it need not be.
No kernel, no worker."""
import shutil

import pytest

from conftest import ROOT, TEST_SECRET, TUTORIAL6
from test_boundaries import _imports, _modules
from grader import versions
from grader.evaluate import dataset_seeds
from grader.intake import collect
from grader.pipeline import BatchProgress, _Batch, _plan
from grader.records import Measurements
from grader.score import score_student
from grader.session import retrain_key
from grader.spec import freeze
from grader.store import Gradebook, keys

DEMO = ROOT / "submissions" / "tutorial6"
#: the packages each stage's work runs, and the code its keys hold: measuring's reuse rests on the measure key and
#: the re-training key stored with the measurements; the score key holds the measure key
STAGES = {"measure": (("grader.measure", "grader.retrain"), keys.MEASURING_CODE + keys.RETRAINING_CODE),
          "score": (("grader.score",), keys.SCORING_CODE + keys.MEASURING_CODE)}


def _imported(roots) -> set[str]:
    """Every module of the package that the packages ``roots`` (every module in them) run: what they import (in
    functions too), and the packages above each (importing ``grader.execute.runner`` runs its ``__init__``)."""
    modules = _modules()
    seen, todo = set(), [m for m in modules if any(m == r or m.startswith(r + ".") for r in roots)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += _imports(name, modules[name], modules)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_runs_is_held_by_its_key(stage):
    roots, parts = STAGES[stage]
    keyed = {p.resolve() for p in keys.code_files(parts)}
    package = keys.code_files(("records.py",))[0].parent
    modules = _modules()
    loose = sorted(str(modules[m].relative_to(package)) for m in _imported(roots) if modules[m].resolve() not in keyed)
    unexplained = [m for m in loose if m not in keys.UNKEYED_CODE]
    assert not unexplained, (f"{stage} runs modules its key does not hold: add them to the key's code in "
                             f"grader/store/keys.py, or to UNKEYED_CODE with the reason: {unexplained}")
    assert set(keys.UNKEYED_CODE) <= {str(p.relative_to(package)) for p in package.glob("*.py")}


def test_a_change_to_retrainings_code_is_seen():
    """The re-training key is compared only when the score key changed (``pipeline._retrained_alike``): so each
    part of its code is also in the measure key's or the score key's, or a change there would re-use stale
    re-trainings unseen."""
    assert set(keys.RETRAINING_CODE) <= set(keys.MEASURING_CODE) | set(keys.SCORING_CODE)


def test_the_walk_follows_lazy_imports_and_parent_packages():
    """The check itself: a module imported inside a function, and the package a submodule sits in, are reached
    (measure imports only ``grader.execute``'s submodules; the package imports ``grader.executed``)."""
    reached = _imported(("grader.measure",))
    assert {"grader.execute", "grader.executed", "grader.keras_io", "grader.evaluate.worker"} <= reached
    assert "grader.report" not in reached and "grader.score" not in reached


@pytest.fixture()
def planned_class(tmp_path):
    """Two students (the demo's bob and dave, model files only) recorded in a real gradebook as a batch records
    them, against a copy of the tutorial6 spec; returns what the planner needs."""
    spec = tmp_path / "tutorial6"
    shutil.copytree(TUTORIAL6, spec, ignore=shutil.ignore_patterns("__pycache__"))
    klass = tmp_path / "class"
    for sid in ("bob", "dave"):
        shutil.copytree(DEMO / sid, klass / sid)
    assignment = freeze(spec).parsed  # as a batch reads it
    seeds = dataset_seeds(assignment, TEST_SECRET)
    grading = versions.current()
    gradebook = Gradebook(out_dir=tmp_path)
    run = gradebook.begin_run(assignment, "local", grading)
    for plan in _plan(assignment, collect(klass, assignment), gradebook, seeds, False, grading):
        assert plan.action == "measure"  # nothing stored yet
        measured = Measurements(plan.submission.student_id, [], [], [], {}, [])
        measured.retrain_key = retrain_key(assignment, measured)
        gradebook.record(assignment.id, run, plan.submission.student_id, content_hash=plan.content,
                         files=plan.files, measure_key=plan.measure_key, score_key=plan.score_key,
                         measurements=measured.to_json(), result=score_student(assignment, measured))
    yield spec, klass, seeds, grading, gradebook
    gradebook.close()


def _actions(spec, klass, seeds, grading, gradebook) -> dict[str, str]:
    assignment = freeze(spec).parsed
    return {p.submission.student_id: p.action
            for p in _plan(assignment, collect(klass, assignment), gradebook, seeds, False, grading)}


def test_one_changed_input_redoes_exactly_the_stage_that_reads_it(planned_class):
    spec, klass, seeds, grading, gradebook = planned_class
    assert _actions(*planned_class) == {"bob": "cached", "dave": "cached"}  # the same inputs: nothing again
    # versions: another Keras (or TensorFlow) measures everyone again; Python's patch release does not
    newer = {**grading, "keras": grading.get("keras", "3") + ".post1"}
    assert _actions(spec, klass, seeds, newer, gradebook) == {"bob": "measure", "dave": "measure"}
    tensorflow = {**grading, "tensorflow": "0.0"}
    assert _actions(spec, klass, seeds, tensorflow, gradebook) == {"bob": "measure", "dave": "measure"}
    major, minor, *_ = grading["python"].split(".")
    patched = {**grading, "python": f"{major}.{minor}.999"}
    assert _actions(spec, klass, seeds, patched, gradebook) == {"bob": "cached", "dave": "cached"}
    # the secret (so the held-out data): measured again
    other = dataset_seeds(freeze(spec).parsed, TEST_SECRET + "-other")
    assert _actions(spec, klass, other, grading, gradebook) == {"bob": "measure", "dave": "measure"}
    # one student's bytes: that student alone
    (klass / "bob" / "1a.h5").write_bytes((klass / "bob" / "1a.h5").read_bytes() + b"\0")
    assert _actions(*planned_class) == {"bob": "measure", "dave": "cached"}
    shutil.copyfile(DEMO / "bob" / "1a.h5", klass / "bob" / "1a.h5")
    assert _actions(*planned_class) == {"bob": "cached", "dave": "cached"}
    # a threshold (a new calibration) or a task's points: re-scored from the stored measurements, not measured
    calibration = spec / "calibration.toml"
    before = calibration.read_text()
    start = before.index('[tasks."2a".accuracy]')
    line = before.index("\npass = ", start) + 1
    calibration.write_text(before[:line] + "pass = 0.95" + before[before.index("\n", line):])
    assert _actions(*planned_class) == {"bob": "rescore", "dave": "rescore"}
    calibration.write_text(before)
    assert _actions(*planned_class) == {"bob": "cached", "dave": "cached"}
    toml = spec / "assignment.toml"
    text = toml.read_text()
    first = text.index("\npoints = ") + 1
    toml.write_text(text[:first] + "points = 11" + text[text.index("\n", first):])
    assert _actions(*planned_class) == {"bob": "rescore", "dave": "rescore"}


def test_a_batch_says_why_it_measures_its_class_again(planned_class, tmp_path):
    """Another Keras than the last batch's measures everyone again: the TA is told why, once; the same versions
    say nothing."""
    spec, klass, seeds, grading, gradebook = planned_class
    notes = []

    class Notes(BatchProgress):
        def note(self, text):
            notes.append(text)

    batch = _Batch(freeze(spec), tmp_path / "out", Notes(), gradebook, seeds)
    batch.versions = grading
    plans = batch.prepare(klass, False, False)[0]
    assert [p.action for p in plans] == ["cached", "cached"] and notes == []
    batch.versions = {**grading, "keras": "9.9.9"}
    plans = batch.prepare(klass, False, False)[0]
    assert [p.action for p in plans] == ["measure", "measure"]
    assert notes == [f"Other versions than the last batch's: keras 9.9.9 (the last run's: {grading['keras']}). What "
                     "a model measures depends on them, so the students it graded are measured again."]
