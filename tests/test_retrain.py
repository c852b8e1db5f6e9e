"""Grading the recipe, not one draw of it: a notebook's model that missed the pass threshold is re-trained.

Captures are made for real: the sheet's code runs in a fresh Python under the grader's own capture hook
(``execute/capture_kernel.py``, as in a notebook kernel), the grader takes what it wrote
(``harvest.take_capture``), and the real evaluation and training workers measure and re-train it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TUTORIAL6, grade_one, task_of
from test_validity import SHEET_2A as SHEET_2A_SCRIPT
from test_validity import needs_sandbox
from grader.evaluate import Evaluator, dataset_seeds
from grader.evaluate import retrain
from grader.harvest import take_capture
from grader.measure import Measurements
from grader.measure.student import capture_source
from grader.records import Provenance
from grader.session import retrain_recipes
from grader.score import score_student

#: a calibration seed under which the sheet's 2a recipe gets stuck at the majority class
#: (calibration.toml: tasks."2a".accuracy.runs, seed 1006 -> 0.667)
STUCK_SEED = 1006

#: a grading secret under which the sheet's unseeded 2a script (``test_validity.SHEET_2A`` as ``work.py``) gets
#: stuck at the majority class in the student's own run (bench/bench_fairness.py prints its secrets' runs)
STUCK_SECRET = "fairness-4"

#: the sheet's 2a network, data and training (solution.task_2a), with ``{optimizer}`` and ``{epochs}`` to fill in
SHEET_2A = """
import numpy as np, keras, datasets
X, y = datasets.gen_simple_circular_distribution(200, rng=np.random.default_rng({seed}))
keras.utils.set_random_seed({seed})
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation='relu'),
                          keras.layers.Dense(4, activation='relu'), keras.layers.Dense(2, activation='softmax')])
model.compile(loss='categorical_crossentropy', optimizer={optimizer})
model.fit(X, keras.utils.to_categorical(y, 2), epochs={epochs}, batch_size=32, verbose=0)
"""


def _capture(assignment, tmp_path, code: str):
    """Run ``code`` in a fresh Python under the grader's capture hook, as a notebook kernel does, and take its
    one fit capture as the grader does."""
    capture_dir = tmp_path / "capture"
    hook = (ROOT / "grader" / "execute" / "capture_kernel.py").read_text()
    env = {**os.environ, "GRADER_CAPTURE_DIR": str(capture_dir), "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", hook + "\n" + code], env=env, cwd=TUTORIAL6,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (meta,) = sorted(p.name for p in capture_dir.glob("*.json"))
    cap = take_capture(capture_dir, meta, tmp_path / "taken")
    cap.identify(assignment)
    return cap


def _measure(assignment, evaluator, cap, tmp_path, name="work.py"):
    """The capture measured as ``measure_student`` measures a notebook's: evaluated, then its recipe re-trained
    when it missed the pass threshold.  Returns the Measurements."""
    source = capture_source(cap, name, tmp_path / "recipes")
    evaluation = evaluator.evaluate(cap.model_path, source.training, provenance=source.provenance)
    evaluated = [(source, evaluation)]
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    retrain_recipes(assignment, evaluator, evaluated, scratch)
    return Measurements("s", [], [], [], {}, evaluated)


def _with_pass(assignment, task_id: str, passing: float):
    """The assignment with another pass threshold for one task's metric (as a changed calibration.toml gives)."""
    def changed(t):
        th = t.threshold(t.metric)
        return replace(t, thresholds={**t.thresholds, t.metric: replace(th, passing=passing)})

    return replace(assignment, tasks=tuple(changed(t) if t.id == task_id else t for t in assignment.tasks))


@pytest.fixture(scope="module")
def stuck(assignment, tmp_path_factory):
    """A real capture of the sheet's 2a recipe whose own run got stuck at the majority class."""
    tmp = tmp_path_factory.mktemp("stuck")
    return _capture(assignment, tmp, SHEET_2A.format(seed=STUCK_SEED, optimizer="'sgd'", epochs=250))


def test_a_stuck_run_of_the_sheets_recipe_is_retrained_to_full_marks(assignment, evaluator, stuck, tmp_path):
    measured = _measure(assignment, evaluator, stuck, tmp_path)
    (source, evaluation), = measured.evaluated
    own = evaluation.datasets["circle"].metrics
    assert own["accuracy"] < assignment.task("2a").threshold("accuracy").partial  # the premise: stuck
    record = evaluation.retraining
    assert record.tasks == ["2a"] and 1 <= len(record.runs) <= assignment.task("2a").threshold(
        "accuracy").misses.retrainings
    assert set(measured.to_json()["evaluated"][0][0]) == {"name", "format", "task_hint", "dataset", "datasets"}  # no recipe

    t = task_of(score_student(assignment, measured), "2a")
    assert t.status == "passed" and t.score == t.max_score
    assert t.metrics["accuracy"] == own["accuracy"]  # the student's own run is still what it was...
    assert t.metrics["retrained_accuracy"] >= assignment.task("2a").threshold("accuracy").passing  # ...beside it
    assert "Training is random" in t.message and "re-trained by the grader" in t.message
    assert "SGD (learning rate 0.01), categorical_crossentropy, 250 epochs, batch size 32" in t.message
    assert "full credit" in t.message

    # stored as JSON in the gradebook, re-scored from it alone: the same result
    from grader.store import codec

    again = Measurements.from_json(codec.decode(codec.encode(measured.to_json())))
    assert task_of(score_student(assignment, again), "2a").to_json() == t.to_json()
    # a stricter pass threshold re-scores the stored re-trainings, without re-training: now partial credit
    strict = task_of(score_student(_with_pass(assignment, "2a", 0.999), again), "2a")
    assert strict.status == "partial" and "partial credit for your recipe" in strict.message
    # where no calibration run ended so low, the words do not say that it did "in 0 of its 30 runs"
    th = assignment.task("2a").threshold("accuracy")
    never = replace(assignment, tasks=tuple(
        replace(t, thresholds={**t.thresholds, "accuracy": replace(th, misses=replace(th.misses, missed_partial=0))})
        if t.id == "2a" else t for t in assignment.tasks))
    words = task_of(score_student(never, again), "2a").message
    assert f"in none of its {th.misses.runs} calibration runs" in words and " in 0 of " not in words, words


@needs_sandbox
def test_the_sheets_script_stuck_under_a_grading_secret_still_gets_full_marks(assignment, tmp_path):
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    (folder / "work.py").write_text(SHEET_2A_SCRIPT)
    with Evaluator(assignment, dataset_seeds(assignment, STUCK_SECRET)) as evaluator:
        t = task_of(grade_one(assignment, evaluator, tmp_path / "subs"), "2a")
    assert t.source and "capture" in t.source
    assert t.metrics["accuracy"] < assignment.task("2a").threshold("accuracy").partial  # the premise: stuck
    assert t.status == "passed" and t.score == t.max_score and t.metrics["retrainings"] >= 1
    assert "re-trained by the grader" in t.message


def test_retraining_is_reproducible_and_follows_the_secret(assignment, evaluator, stuck, tmp_path):
    first = _measure(assignment, evaluator, stuck, tmp_path / "one")
    second = _measure(assignment, evaluator, stuck, tmp_path / "two")
    a, b = first.evaluated[0][1].retraining, second.evaluated[0][1].retraining
    assert a.runs and a == b  # same secret, same capture: the same seeds and the same measurements

    source = capture_source(stuck, "work.py", tmp_path / "keep")
    vetted = retrain.vet(source.recipe)
    dense = [list(layer) for layer in first.evaluated[0][1].info.dense]
    seed = retrain.retrain_seed(evaluator.seeds, vetted, source.recipe, dense, 0)
    assert seed == a.runs[0].seed
    other = dataset_seeds(assignment, "another-secret")
    assert retrain.retrain_seed(other, vetted, source.recipe, dense, 0) != seed  # another secret, other draws
    assert retrain.retrain_seed(evaluator.seeds, vetted, source.recipe, dense, 1) != seed  # each its own seed


def test_an_optimizer_outside_the_allow_list_is_not_retrained_and_the_report_says_why(assignment, evaluator,
                                                                                      tmp_path):
    mine = "type('Mine', (keras.optimizers.SGD,), {})(learning_rate=0.01)"
    cap = _capture(assignment, tmp_path, SHEET_2A.format(seed=STUCK_SEED, optimizer=mine, epochs=5))
    measured = _measure(assignment, evaluator, cap, tmp_path)
    record = measured.evaluated[0][1].retraining
    assert "Mine" in record.refused and not record.runs
    t = task_of(score_student(assignment, measured), "2a")
    assert t.status != "passed"
    assert "Your recipe was not re-trained: its optimizer (Mine) is not one the grader re-trains" in t.message
    assert "SGD, Adam, RMSprop" in t.message


def test_a_run_that_saved_its_stuck_model_gets_the_file_its_recipes_credit(assignment, evaluator, stuck, tmp_path):
    # a notebook's run that saved the model it had just trained (task 3's model.h5): the file is that fit's model
    # weight for weight, so its recipe's re-trainings judge it as they judge 2a; a file of other weights (an
    # untrained model saved beside it) gets no such credit
    import keras

    from grader.intake.formats import sniff_format
    from grader.records import Source

    measured = _measure(assignment, evaluator, stuck, tmp_path)
    fresh = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2, activation="softmax")])
    fresh.save(tmp_path / "fresh.h5")
    keras.saving.load_model(stuck.model_path).save(tmp_path / "model.h5")  # the same weights, as the run saved it

    def with_saved(path):
        source = Source("model.h5 (saved by work.py)", sniff_format(path), "3", provenance=Provenance("saved"))
        evaluation = evaluator.evaluate(path, None, provenance=source.provenance)
        return Measurements("s", [], [], [], {}, measured.evaluated + [(source, evaluation)])

    three = task_of(score_student(assignment, with_saved(tmp_path / "model.h5")), "3")
    assert (three.status, three.score) == ("passed", 10), three.message
    assert "your notebook trained (work.py" in three.message and "re-trained, reached" in three.message, three.message
    other = task_of(score_student(assignment, with_saved(tmp_path / "fresh.h5")), "3")
    assert other.score < 10 and "re-trained" not in other.message, other.message


def test_a_saved_model_has_no_recipe_and_is_graded_as_submitted(assignment, evaluator, stuck, tmp_path):
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    shutil.copy(stuck.model_path, folder / "2a.keras")
    result = grade_one(assignment, evaluator, tmp_path / "subs")
    t = task_of(result, "2a")
    assert t.status != "passed" and "re-trained" not in t.message
    notes = [n for n in result.notes if "saved model files" in n]
    assert len(notes) == 1 and "could not re-train it" in notes[0] and "as submitted" in notes[0]


def test_only_standard_optimizers_losses_and_plain_settings_are_rebuilt():
    x, y = np.zeros((4, 2)), np.zeros((4, 2))
    sgd = {"module": "keras.optimizers", "class_name": "SGD", "config": {"name": "sgd", "learning_rate": 0.01,
                                                                          "momentum": 0.0, "nesterov": False}}
    good = {"optimizer": sgd, "loss": "categorical_crossentropy", "epochs": 250, "batch_size": 32, "shuffle": True,
            "validation_split": 0.0, "x": x, "y": y}
    vetted = retrain.vet(good)
    assert vetted["optimizer"] == ("SGD", {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False})
    assert retrain.vet({**good, "loss": {"module": "builtins", "class_name": "function",
                                         "config": "categorical_crossentropy"}})["loss"] == (
        "categorical_crossentropy", None)
    schedule = {**sgd, "config": {"learning_rate": {"class_name": "ExponentialDecay", "config": {}}}}
    refused = {
        "a learning-rate schedule": {"optimizer": schedule},
        "a custom optimizer": {"optimizer": {**sgd, "class_name": "Evil"}},
        "another module": {"optimizer": {**sgd, "module": "evil.optimizers"}},
        "a learning rate of 0": {"optimizer": {**sgd, "config": {"learning_rate": 0.0}}},
        "a custom loss": {"loss": {"module": "__main__", "class_name": "MyLoss", "config": {}}},
        "a loss that is code": {"loss": "lambda y, p: 0"},
        "a loss setting that is text": {"loss": {"class_name": "Huber", "config": {"delta": "__import__('os')"}}},
        "fractional epochs": {"epochs": 2.5},
        "no data": {"x": None},
    }
    for what, change in refused.items():
        with pytest.raises(retrain.RecipeRefused):
            retrain.vet({**good, **change})
            pytest.fail(f"{what} was accepted")


def test_the_training_worker_runs_on_the_training_backend(assignment):
    ev = Evaluator(assignment, {})
    assert ev.backend == assignment.limits.backend == "tensorflow"
    assert ev.trainer.backend == assignment.limits.retraining.backend == "jax"
    ev.close()


def _maps_tensorflow(pid: int) -> bool:
    """Whether process ``pid`` has TensorFlow's native library loaded (its memory maps name it)."""
    return "_pywrap_tensorflow_internal" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see a process's libraries")
def test_the_training_worker_retrains_and_saves_without_loading_tensorflow(assignment, evaluator, stuck, tmp_path):
    """The training worker (JAX) defers TensorFlow as the kernels do: re-training and saving the models it
    trains never load it (about 3 s of the worker's start, 0.8 GB of libraries), while the evaluation
    worker, on TensorFlow, has it."""
    measured = _measure(assignment, evaluator, stuck, tmp_path)
    assert measured.evaluated[0][1].retraining.runs  # it trained and saved at least one model
    assert not _maps_tensorflow(evaluator.trainer._proc.pid)
    assert _maps_tensorflow(evaluator._proc.pid)
