"""Grading saved models: references get full marks, tasks are inferred, mistakes are named."""
import shutil

import numpy as np

from conftest import grade_one, real_file, small_model, task_of
from grader.assess import assess


def test_every_reference_gets_full_marks(assignment, evaluator, model_dir, tmp_path):
    student = tmp_path / "subs" / "ref"
    shutil.copytree(model_dir, student)
    shutil.copy(model_dir / "2a.h5", student / "model.h5")
    result = grade_one(assignment, evaluator, tmp_path / "subs", "ref")
    for t in result.tasks:
        assert t.status == "passed", (t.id, t.message)
        assert t.score == t.max_score
    assert result.score == result.max_score == 100


def test_1a_reference_fails_the_fit_threshold_that_1c_passes(assignment, evaluator, model_dir):
    ev_1a = evaluator.evaluate(model_dir / "1a.h5")
    ev_1c = evaluator.evaluate(model_dir / "1c.h5")
    task_1c = assignment.task("1c")
    threshold = task_1c.threshold("mse").passing
    assert ev_1a.datasets["curve"].metrics["mse"] > threshold
    assert ev_1c.datasets["curve"].metrics["mse"] <= threshold
    assert assess(task_1c, ev_1a).metric_fraction == 0


def test_unnamed_models_are_inferred(assignment, evaluator, model_dir, tmp_path):
    student = tmp_path / "subs" / "s"
    student.mkdir(parents=True)
    for tid, name in (("1b", "handset.h5"), ("1c", "wide.h5"), ("2a", "circle.h5"), ("4", "ring.h5"),
                      ("2b", "xor_model.h5")):
        shutil.copy(model_dir / f"{tid}.h5", student / name)
    result = grade_one(assignment, evaluator, tmp_path / "subs")
    for tid, name in (("1b", "handset.h5"), ("1c", "wide.h5"), ("2a", "circle.h5"), ("4", "ring.h5"),
                      ("2b", "xor_model.h5")):
        t = task_of(result, tid)
        assert t.source == name and t.inferred and t.status == "passed", (tid, t.message)
        assert "Inferred" in t.message


def test_real_tf26_student_model_is_graded_as_2a(assignment, evaluator, tmp_path):
    src = real_file("tf26_student_circle_model.h5")
    student = tmp_path / "subs" / "student"
    student.mkdir(parents=True)
    shutil.copy(src, student / "my_model.h5")
    result = grade_one(assignment, evaluator, tmp_path / "subs", "student")
    t = task_of(result, "2a")
    assert t.source == "my_model.h5" and t.inferred
    assert "accuracy" in t.metrics and 0.5 < t.metrics["accuracy"] <= 1.0
    assert t.architecture.startswith("2 input(s) → Dense(4, relu), Dense(4, relu), Dense(2, softmax)")
    assert t.status in ("passed", "partial", "failed")


def test_the_same_h5_graded_twice_gives_identical_results(assignment, evaluator, model_dir, tmp_path):
    student = tmp_path / "subs" / "s"
    student.mkdir(parents=True)
    for tid in ("1c", "2a", "2c"):
        shutil.copy(model_dir / f"{tid}.h5", student / f"{tid}.h5")
    first = grade_one(assignment, evaluator, tmp_path / "subs").to_json()
    second = grade_one(assignment, evaluator, tmp_path / "subs").to_json()
    assert first == second


def _save(model, folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / name)


def test_swapped_outputs_are_named(assignment, evaluator, reference_models, tmp_path):
    model = reference_models["2a"][0]
    import keras

    swapped = keras.models.clone_model(model)
    swapped.set_weights(model.get_weights())
    kernel, bias = swapped.layers[-1].get_weights()
    swapped.layers[-1].set_weights([kernel[:, ::-1], bias[::-1]])
    _save(swapped, tmp_path / "subs" / "s", "2a.h5")
    t = task_of(grade_one(assignment, evaluator, tmp_path / "subs"), "2a")
    assert t.metrics["accuracy"] < 0.2 and t.metrics["accuracy_swapped"] > 0.9
    assert "outputs look swapped" in t.message and t.status != "passed"
    assert "has not learned" not in t.message  # it has learned the classes, in the wrong order: one fault


def test_single_output_no_softmax_and_wrong_width_are_named(assignment, evaluator, tmp_path):
    folder = tmp_path / "subs" / "s"
    _save(small_model(outputs=(1, "sigmoid")), folder, "2a.h5")
    _save(small_model(outputs=(2, "linear")), folder, "2b.h5")
    _save(small_model(inputs=3), folder, "mystery.h5")
    result = grade_one(assignment, evaluator, tmp_path / "subs")
    assert "single output" in task_of(result, "2a").message
    assert "not probabilities" in task_of(result, "2b").message
    mystery = next(f for f in result.files if f.name == "mystery.h5")
    assert mystery.outcome == "unmatched" and "takes 3 input(s)" in mystery.message


def test_nan_weights_are_named(assignment, evaluator, tmp_path):
    model = small_model(hidden=((3, "relu"),), inputs=1, outputs=(1, "linear"))
    w = model.get_weights()
    w[0][0, 0] = np.nan
    model.set_weights(w)
    _save(model, tmp_path / "subs" / "s", "1c.h5")
    t = task_of(grade_one(assignment, evaluator, tmp_path / "subs"), "1c")
    assert t.score == 0 and "NaN" in t.message


def test_keras_zip_and_activation_layers_are_understood(assignment, evaluator, reference_models, tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    src = reference_models["2a"][0]
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4), keras.layers.Activation("relu"),
                              keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2),
                              keras.layers.Activation("softmax")])
    weights = src.get_weights()
    model.set_weights(weights)
    _save(model, tmp_path / "subs" / "s", "task_2a.keras")
    t = task_of(grade_one(assignment, evaluator, tmp_path / "subs"), "2a")
    assert t.status == "passed", t.message


def test_model_h5_needs_hdf5_and_a_trained_model(assignment, evaluator, model_dir, tmp_path):
    good = tmp_path / "a" / "s"
    good.mkdir(parents=True)
    shutil.copy(model_dir / "2a.h5", good / "model.h5")
    result = grade_one(assignment, evaluator, tmp_path / "a")
    assert task_of(result, "3").status == "passed"
    # the only model for 2a: it counts there too, and the report says so
    assert task_of(result, "2a").status == "passed" and "only model" in task_of(result, "2a").message

    untrained = tmp_path / "b" / "s"
    _save(small_model(hidden=((4, "relu"), (4, "relu"))), untrained, "model.h5")
    t = task_of(grade_one(assignment, evaluator, tmp_path / "b"), "3")
    assert t.status == "partial" and "does no better than an untrained one" in t.message


def test_a_wrong_network_is_the_fault_named_first(assignment, evaluator, model_dir, tmp_path):
    # bob's mistake: the 1a network (Dense(3)) handed in as 1c (Dense(150)); training longer would not help
    student = tmp_path / "subs" / "s"
    student.mkdir(parents=True)
    shutil.copy(model_dir / "1a.h5", student / "1c.h5")
    t = task_of(grade_one(assignment, evaluator, tmp_path / "subs"), "1c")
    assert t.status == "failed"
    assert t.message.startswith("Architecture: hidden layer 1 is Dense(3, relu) but the task asks for Dense(150"), \
        t.message
    assert assignment.task("1c").hint not in t.message  # "train for 2000 epochs" is not the fault here


def test_the_evaluation_worker_runs_tensorflow_on_one_thread_and_measures_the_same(assignment, model_dir,
                                                                                   monkeypatch):
    """Beside the notebooks' kernels, TensorFlow's own thread pools only take turns with them: the worker uses
    one thread (unless the TA's environment says otherwise), and its measurements are the very same."""
    import os

    from conftest import TEST_SECRET
    from grader.evaluate import Evaluator, dataset_seeds

    seeds = dataset_seeds(assignment, TEST_SECRET)
    seen = {}
    for threads in (None, "1", "2"):
        if threads:
            monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", threads)
            monkeypatch.setenv("TF_NUM_INTEROP_THREADS", threads)
        with Evaluator(assignment, seeds) as ev:
            measured = ev.evaluate(model_dir / "2a.h5")
            seen[threads] = (len(os.listdir(f"/proc/{ev._proc.pid}/task")), measured.to_json()["datasets"])
    assert seen[None][0] == seen["1"][0] < seen["2"][0]  # by default, TensorFlow's pools of one thread
    np.testing.assert_equal(seen[None][1], seen["2"][1])  # bit for bit
