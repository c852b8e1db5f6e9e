"""The stages' records are typed: read by field, never as dicts; each survives the gradebook (to_json, from_json),
and the older gradebook shapes they alone read still score as they did."""
import dataclasses
import json

import pytest

from conftest import task_of
from grader import records
from grader.records import (DatasetResult, Evaluation, FileResult, Measurements, ModelInfo, Provenance, Retraining,
                            RetrainingRun, Source, StudentResult, TaskResult, Trained)
from grader.score import score_student

RECORDS = [ModelInfo, Provenance, DatasetResult, Trained, RetrainingRun, Retraining, Evaluation, Source, FileResult,
           Measurements, TaskResult,
           StudentResult]

#: 2a's layers (tutorial6): two inputs, Dense(4, relu) twice, Dense(2, softmax)
INFO_2A = {"inputs": 2, "outputs": 2, "dense": [[4, "relu"], [4, "relu"], [2, "softmax"]], "other_layers": [],
           "parameters": 42, "finite": True}


def _evaluation(accuracy: float, retraining=None, **more) -> Evaluation:
    return Evaluation("keras", ModelInfo.from_json(INFO_2A), {"circle": DatasetResult({"accuracy": accuracy,
                                                                                    "majority_baseline": 0.5})},
                      "ab" * 32, None, None, Provenance("fit", epochs=250), retraining, more)


def test_every_record_in_records_is_a_dataclass_read_by_field_only():
    found = {obj for obj in vars(records).values() if isinstance(obj, type) and dataclasses.is_dataclass(obj)
             and obj.__module__ == records.__name__}
    assert found == set(RECORDS)  # a new record is added here, and so held to the same rules
    for record in RECORDS:
        for shim in ("__getitem__", "get", "keys", "items", "values", "__contains__", "__iter__", "__len__"):
            assert not hasattr(record, shim), (record.__name__, shim)


def test_an_evaluation_is_not_a_dict():
    retraining = Retraining(["2a"], ["circle"], [RetrainingRun(1, 250, True, {"circle": {"accuracy": 0.95}})], 10,
                            600.0)
    evaluation = _evaluation(0.5, retraining)
    with pytest.raises(TypeError):
        evaluation["datasets"]
    with pytest.raises(TypeError):
        retraining["runs"]
    with pytest.raises(TypeError):
        retraining.runs[0]["metrics"]
    with pytest.raises(TypeError):
        "retraining" in evaluation
    with pytest.raises(AttributeError):
        evaluation.get("provenance")
    with pytest.raises(AttributeError):  # a typo is an error, not None
        evaluation.retrainig
    assert evaluation != evaluation.to_json()  # a record equals a record, never its stored JSON
    assert evaluation.made_by == "fit" and evaluation.own().retraining is None and evaluation.retraining is retraining


def _measurements() -> Measurements:
    retraining = Retraining(["2a"], ["circle"], [RetrainingRun(7, 250, True, {"circle": {"accuracy": 0.95}})],
                            10, 600.0, 9, {"2a": 0.9315}, recipe="SGD, 250 epochs", epochs=250, trained_epochs=250)
    fit = Source("work.ipynb, fit 1", "keras", None, "circle", provenance=Provenance("fit", epochs=250),
                 datasets=["circle", "circle_overlap"])
    saved = Source("2a.h5", "h5", "2a", provenance=Provenance("file"))
    return Measurements("s", [FileResult("work.ipynb", "notebook", "executed", message="ran 3 cell(s)")],
                        ["a note"], [{"name": "work.ipynb", "cells_run": 3}], {"1a": "could not be run"},
                        [(fit, _evaluation(0.5, retraining)), (saved, Evaluation.from_json(
                            {"format": "h5", "info": INFO_2A, "datasets": {}}, {"made_by": "file"}))],
                        retrain_key="k1", executed=[{"name": "work.ipynb", "cells": []}])


def test_every_record_survives_the_gradebook():
    measured = _measurements()
    stored = json.loads(json.dumps(measured.to_json()))
    again = Measurements.from_json(stored)
    assert again.to_json() == stored and again.executed == measured.executed
    assert [e for _, e in again.evaluated] == [e for _, e in measured.evaluated]  # each Evaluation, field by field
    assert (again.files, again.notes, again.errors_by_task, again.retrain_key) == \
        (measured.files, measured.notes, measured.errors_by_task, measured.retrain_key)
    (fit, evaluation), (saved, _) = again.evaluated
    assert isinstance(evaluation, Evaluation) and isinstance(evaluation.retraining, Retraining)
    assert evaluation.retraining.k == 9 and evaluation.retraining.passing == {"2a": 0.9315}
    assert evaluation.retraining.runs == [RetrainingRun(7, 250, True, {"circle": {"accuracy": 0.95}})]
    assert fit.plausible == ["circle", "circle_overlap"] and fit.provenance == Provenance("fit", 250)
    assert fit.recipe is None and fit.training is None  # measuring's, never stored
    assert saved.provenance == Provenance("file") and saved.task_hint == "2a"
    retraining = measured.evaluated[0][1].retraining
    for record in (measured.evaluated[0][1], retraining, retraining.runs[0], *measured.files):
        assert type(record).from_json(json.loads(json.dumps(record.to_json()))) == record
    result = StudentResult("s", 7.5, 10.0, [
        TaskResult("2a", "Circles", 7.5, 10.0, "partial", {"accuracy": 0.8}, "words", "2a.h5", True, False,
                   {"metric": "accuracy", "pass": 0.93, "source": "calibration"}, "2 input(s)", None, "circle"),
        TaskResult("1a", "Curve", 0.0, 0.0, "missing", optional=True)], list(measured.files), ["n"], [], "B")
    stored = json.loads(json.dumps(result.to_json()))
    assert StudentResult.from_json(stored) == result and StudentResult.from_json(stored).to_json() == stored


def test_the_older_gradebook_shapes_are_read():
    """What records read of gradebooks written before: a re-training of one ``dataset`` (no ``datasets``, no K,
    no thresholds, runs without ``fused``), an evaluation with no provenance and a key of the worker's no field
    names, a source with no ``datasets``, results and measurements without their later keys."""
    old = {"student_id": "s", "files": [{"name": "2a.h5", "format": "h5", "outcome": "graded"}], "notes": [],
           "notebooks": [], "errors_by_task": {},
           "evaluated": [[{"name": "work.ipynb, fit 1", "format": "keras", "task_hint": None, "dataset": "circle"},
                          {"format": "keras", "info": INFO_2A, "datasets": {}, "weights_sha256": "00",
                           "worker_note": "kept", "retraining": {"tasks": ["2a"], "dataset": "circle", "runs": [
                               {"seed": 3, "epochs": 250, "metrics": {"circle": {"accuracy": 0.9}}}],
                               "limit": 10, "budget": 600.0}}]]}
    measured = Measurements.from_json(old)
    assert measured.retrain_key is None and measured.executed == []
    (source, evaluation), = measured.evaluated
    assert source.plausible == ["circle"] and source.datasets is None and source.provenance is None
    assert evaluation.provenance is None and evaluation.made_by is None and evaluation.extra == {"worker_note": "kept"}
    r = evaluation.retraining
    assert r.datasets == [] and r.k is None and r.passing is None
    assert r.runs == [RetrainingRun(3, 250, None, {"circle": {"accuracy": 0.9}})]
    assert r.for_dataset("circle") and not r.for_dataset("xor")  # its one dataset, kept under the old key
    assert Retraining.from_json({"tasks": ["2a"]}).for_dataset("xor")  # none named: any
    assert Measurements.from_json(measured.to_json()).to_json() == measured.to_json()
    again = measured.to_json()["evaluated"][0][1]["retraining"]
    assert again["runs"] == old["evaluated"][0][1]["retraining"]["runs"] and again["dataset"] == "circle"  # as stored
    assert evaluation.to_json()["worker_note"] == "kept" and evaluation.to_json()["retraining"]["dataset"] == "circle"
    assert measured.files[0].captured is False and measured.files[0].task is None
    t = TaskResult.from_json({"id": "2a", "score": 1.0, "max_score": 2.0, "status": "partial", "metrics": {},
                              "message": "m"})
    assert (t.title, t.source, t.inferred, t.optional, t.threshold, t.dataset) == ("2a", None, False, False, None,
                                                                                   None)
    s = StudentResult.from_json({"id": "s", "score": 1.0, "max_score": 2.0, "tasks": [t.to_json()]})
    assert (s.files, s.notes, s.notebooks, s.grade) == ([], [], [], None)


def test_what_the_worker_found_is_typed_and_frozen_and_its_stored_keys_come_back_as_they_were():
    """A model's info, its measurements on a dataset and its provenance are frozen records read by field; each is
    written back with exactly the keys (and order) it was stored with: a row lacking the later keys stays without
    them, a key no field names is kept, a None that was stored stays stored."""
    stored = {"format": "h5", "info": {"outputs": 2, "inputs": 2, "dense": [[4, "relu"], [2, "softmax"]],
                                       "other_layers": ["Dropout"], "parameters": 22, "finite": True, "odd": 1},
              "datasets": {"circle": {"metrics": {"accuracy": 0.9}, "note": "kept"}, "xor": {"metrics": {}}},
              "provenance": {"made_by": "fit", "samples": None, "epochs": 9, "optimizer": "sgd", "new_key": [1]}}
    evaluation = Evaluation.from_json(json.loads(json.dumps(stored)))
    info, circle, made = evaluation.info, evaluation.datasets["circle"], evaluation.provenance
    assert (info.inputs, info.outputs, info.dense, info.other_layers, info.parameters, info.finite) == \
        (2, 2, ((4, "relu"), (2, "softmax")), ("Dropout",), 22, True)
    assert info.keras_version is None and info.extra == {"odd": 1}
    assert circle.metrics == {"accuracy": 0.9} and circle.plot is None and circle.extra == {"note": "kept"}
    assert (made.made_by, made.samples, made.epochs, made.optimizer, made.keras, made.extra) == \
        ("fit", None, 9, "sgd", None, {"new_key": [1]})
    assert evaluation.measured_on("ring") == DatasetResult() and evaluation.measured_on("xor").metrics == {}
    again = evaluation.to_json()
    assert again == stored and list(again["info"]) == list(stored["info"])
    assert list(again["provenance"]) == list(stored["provenance"])
    for record in (info, circle, made):
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.extra = {}
        with pytest.raises(TypeError):
            record["extra"]
    # made afresh (the worker, the harvester): the worker's every key for the info, the set ones for the rest
    fresh = ModelInfo(1, 1, ((3, "relu"), (1, "linear")), (), 10)
    assert fresh.to_json() == {"inputs": 1, "outputs": 1, "dense": [[3, "relu"], [1, "linear"]], "other_layers": [],
                               "parameters": 10, "finite": True, "keras_version": None}
    assert Provenance("file").to_json() == {"made_by": "file"} and Evaluation().to_json()["info"] == {}
    assert Evaluation.from_json({"info": fresh.to_json()}, {"made_by": "file"}).info == fresh  # stored dicts: read


def test_an_old_re_training_of_one_dataset_still_scores(assignment):
    """A stuck 2a run whose recipe was re-trained, as a gradebook stored it before the datasets, K and the pass
    thresholds were kept: the re-training is credited as before; on another task's data it is not."""
    runs = [{"seed": 1, "epochs": 250, "metrics": {"circle": {"accuracy": 0.96, "majority_baseline": 0.5}}}]

    def stored(dataset):
        return {"student_id": "s", "files": [], "notes": [], "notebooks": [], "errors_by_task": {},
                "evaluated": [[{"name": "work.ipynb, fit 1", "format": "keras", "task_hint": "2a", "dataset": "circle"},
                               _evaluation(0.5).to_json() | {"retraining": {
                                   "tasks": ["2a"], "dataset": dataset, "runs": runs, "limit": 10, "budget": 600.0,
                                   "recipe": "SGD, 250 epochs", "epochs": 250, "trained_epochs": 250}}]]}

    t = task_of(score_student(assignment, Measurements.from_json(stored("circle"))), "2a")
    assert t.status == "passed" and t.metrics["retrained_accuracy"] == 0.96, t.message
    assert "Your recipe (SGD, 250 epochs), re-trained by the grader once" in t.message
    elsewhere = task_of(score_student(assignment, Measurements.from_json(stored("xor"))), "2a")
    assert elsewhere.status != "passed" and "retrained_accuracy" not in elsewhere.metrics


def test_a_re_training_that_stopped_early_says_why_from_its_fields(assignment):
    """The words read the record's own fields: its cap of epochs, its time budget, its error."""
    short = RetrainingRun(1, 100, True, {"circle": {"accuracy": 0.8, "majority_baseline": 0.5}})
    for stopped, said in (("budget", "the grader's re-training time of 600 s per student ran out"),
                          ("count", "the grader's limit of 10 re-trainings per student was reached"),
                          ("error", "a re-training failed (the worker died)")):
        r = Retraining(["2a"], ["circle"], [short], 10, 600.0, 9, {"2a": 0.9315}, recipe="SGD", epochs=250,
                       trained_epochs=100, stopped=stopped, error="the worker died" if stopped == "error" else None)
        measured = Measurements("s", [], [], [], {}, [(Source("work.ipynb, fit 1", "keras", "2a", "circle"),
                                                       _evaluation(0.5, r))])
        t = task_of(score_student(assignment, measured), "2a")
        assert t.status == "partial" and t.metrics["retrained_accuracy"] == 0.8, t.message
        assert "for 100 epochs (the grader's cap) instead of your 250" in t.message
        assert f"Re-training stopped early: {said}." in t.message
