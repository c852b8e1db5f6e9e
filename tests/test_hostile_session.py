"""Hostile submissions against what session 2026-12-07 added: a saved model.h5 credited by its fit's recipe.

Each case is its own hostile submission, graded by the real parts (capture hook, evaluation and training
workers, scoring).  Assertions are on grades and words, never on time.
"""
from __future__ import annotations

from conftest import task_of
from test_retrain import _measure, stuck  # noqa: F401 (stuck: the real stuck capture of the sheet's 2a recipe)
from grader.measure import Measurements
from grader.records import Evaluation
from grader.score import score_student


def _with_saved(evaluator, measured, path):
    """``measured`` with ``path`` as the model.h5 the same run saved."""
    from grader.intake.formats import sniff_format
    from grader.records import Source

    source = Source("model.h5 (saved by work.py)", sniff_format(path), "3", provenance={"made_by": "saved"})
    evaluation = Evaluation.from_json(evaluator.evaluate(path, None), source.provenance)
    return Measurements("s", [], [], [], {}, measured.evaluated + [(source, evaluation)])


def test_a_saved_file_with_the_fits_weights_in_another_network_gets_no_recipe_credit(assignment, evaluator, stuck,
                                                                                       tmp_path):
    """Hostile: model.h5 holds, byte for byte, the weights of the notebook's stuck 2a fit (whose recipe the
    grader re-trains to a pass), but under other activations (sigmoid outputs, linear hidden layers): the
    weights' digest is the fit's, the network is not.  Before, it was called 'the model your notebook trained'
    and given task 3's full marks."""
    import keras

    measured = _measure(assignment, evaluator, stuck, tmp_path)
    (_, fit), = measured.evaluated
    assert fit.retraining is not None and task_of(score_student(assignment, measured), "2a").score > 0  # premise
    trained = keras.saving.load_model(stuck.model_path)
    other = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="linear"),
                              keras.layers.Dense(4, activation="linear"), keras.layers.Dense(2, activation="sigmoid")])
    other.set_weights(trained.get_weights())
    other.save(tmp_path / "model.h5")
    with_saved = _with_saved(evaluator, measured, tmp_path / "model.h5")
    (_, saved) = with_saved.evaluated[-1]
    assert saved.weights_sha256 == fit.weights_sha256  # the premise: the digest cannot tell them apart
    three = task_of(score_student(assignment, with_saved), "3")
    assert "your notebook trained" not in three.message and "re-trained" not in three.message, three.message
    assert three.score < 10, three.message
