"""The evaluation worker's reply is read once, where it enters the grader's process, into a typed ``Evaluation``
(the training worker's into a ``Trained``); a reply that is not as the worker writes it fails that model alone, in
words, with its traceback in the log.  Pure (no Keras, no worker): the replies are made by the same ``to_json``
the worker uses."""
import copy
import json
import logging
import shutil

import numpy as np
import pytest

from grader.errors import EvaluationFailed, SubmissionError
from grader.evaluate.worker import _typed, read_reply
from grader.records import INTERNAL_ERROR, DatasetResult, Evaluation, ModelInfo, Provenance, Trained

INFO = ModelInfo(2, 2, ((4, "relu"), (2, "softmax")), (), 22, keras_version="3.6.0")


def _reply() -> dict:
    """A reply as ``_Session.measure`` writes it: the info's and each dataset's ``to_json``."""
    plot = {"grid": np.zeros((4, 4), np.float16), "extent": [-1.0, 1.0, -1.0, 1.0],
            "x": np.zeros((3, 2), np.float32), "y": np.zeros(3, np.int8), "pred": np.zeros(3, np.int8)}
    return {"format": "h5", "info": INFO.to_json(), "datasets": {
                "circle": DatasetResult({"accuracy": 0.95, "majority_baseline": 0.5, "gap": -0.01}, plot).to_json(),
                "xor": DatasetResult({"accuracy": 0.5}, {}).to_json()},
            "weights_sha256": "0f" * 32, "weights_sketch": {"shapes": [[2, 4]], "norm": 1.0, "v": [0.5] * 16},
            "preprocessing": {"file": "scale.txt", "applied": True, "problems": []}}


def test_a_reply_is_read_into_typed_records_that_write_it_back_as_it_came():
    reply = _reply()
    evaluation = read_reply(copy.deepcopy(reply), "2a.h5", Provenance("file"))
    assert isinstance(evaluation, Evaluation) and evaluation.info == INFO
    circle = evaluation.datasets["circle"]
    assert isinstance(circle, DatasetResult) and circle.metrics["accuracy"] == 0.95
    assert circle.plot["grid"].shape == (4, 4) and evaluation.datasets["xor"].plot == {}
    assert evaluation.made_by == "file" and evaluation.weights_sha256 == "0f" * 32
    assert evaluation.preprocessing == reply["preprocessing"] and evaluation.extra == {}
    back = evaluation.to_json()
    assert list(back["info"]) == list(reply["info"]) and back["info"] == reply["info"]
    assert back["datasets"]["circle"]["metrics"] == reply["datasets"]["circle"]["metrics"]
    assert back["provenance"] == {"made_by": "file"} and back["weights_sketch"] == reply["weights_sketch"]
    minimal = {k: v for k, v in reply.items() if k not in ("weights_sketch", "preprocessing")}
    assert read_reply(minimal, "2a.h5").weights_sketch is None  # a model of non-finite weights has no sketch


def _set(path: str, value):
    def change(reply):
        *parents, last = path.split("/")
        d = reply
        for p in parents:
            d = d[p]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
        return reply
    return change


MALFORMED = {
    "not a dict": (lambda r: ["format", "h5"], "is list, not dict"),
    "no info": (_set("info", KeyError), "lacks info"),
    "a key no evaluation has": (_set("evil", 1), "has unknown evil"),
    "inputs as text": (_set("info/inputs", "2"), "its inputs is str"),
    "parameters as a bool": (_set("info/parameters", True), "its parameters is bool"),
    "a layer of one part": (_set("info/dense", [[4], [2, "softmax"]]), "1 parts"),
    "units as a float": (_set("info/dense", [[4.5, "relu"]]), "units is float"),
    "an info key no field names": (_set("info/odd", 1), "has unknown odd"),
    "an info without keras_version": (_set("info/keras_version", KeyError), "lacks keras_version"),
    "a metric as text": (_set("datasets/circle/metrics/accuracy", "0.95"), "circle's accuracy is str"),
    "a metric as a bool": (_set("datasets/circle/metrics/accuracy", True), "circle's accuracy is bool"),
    "a dataset without metrics": (_set("datasets/xor/metrics", KeyError), "xor lacks metrics"),
    "a plot as a list": (_set("datasets/xor/plot", [1, 2]), "xor's plot is list"),
    "a dataset named by a number": (_set("datasets", {1: {"metrics": {}}}), "a dataset's name is int"),
    "a hash that is no SHA-256": (_set("weights_sha256", "../../etc/passwd"), "not a SHA-256"),
    "a sketch as text": (_set("weights_sketch", "v"), "sketch is str"),
    "a format as None": (_set("format", None), "its format is NoneType"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_reply_says_what_is_wrong(case):
    change, said = MALFORMED[case]
    with pytest.raises(ValueError, match=said.replace("(", r"\(")):
        Evaluation.from_worker(change(_reply()))


def test_a_malformed_reply_fails_that_model_in_words_with_its_traceback_in_the_log(caplog):
    reply = _set("datasets/circle/metrics/accuracy", "0.95")(_reply())
    with caplog.at_level(logging.ERROR, logger="grader"):
        with pytest.raises(EvaluationFailed) as raised:
            read_reply(reply, "2a.h5")
    error = raised.value
    assert isinstance(error, SubmissionError)  # this model's error: the student's other models and the batch go on
    assert error.message.startswith(INTERNAL_ERROR)  # a grader bug, which review puts before a TA
    assert "2a.h5" in error.message and "circle's accuracy is str" in error.message
    assert isinstance(error.__cause__, ValueError)  # the cause is kept with it
    (logged,) = [r for r in caplog.records if "2a.h5" in r.getMessage()]
    assert logged.exc_info is not None and logged.exc_info[0] is ValueError  # the traceback, for the log


def test_the_training_workers_reply_is_typed_too():
    assert Trained.from_worker({"epochs": 250, "fused": True}) == Trained(250, True)
    assert Trained.from_worker({"epochs": 3}) == Trained(3, None)
    for bad, said in (({"epochs": "250"}, "its epochs is str"), ({"epochs": 1, "fused": 1}, "fused is int"),
                      ({}, "lacks epochs"), ({"epochs": 1, "path": "/etc"}, "has unknown path")):
        with pytest.raises(EvaluationFailed, match=said) as raised:
            _typed("fit-1.keras", lambda: Trained.from_worker(bad))
        assert raised.value.message.startswith(INTERNAL_ERROR) and "fit-1.keras" in raised.value.message


def test_the_keras_version_a_file_claims_is_the_students_word_bounded(evaluator, tmp_path):
    """Hostile: the Keras version is whatever a .keras file's metadata.json says (a number, a megabyte of text) or
    an .h5 file's attribute (an integer); the reply's strict reading must not turn it into a grader failure, and the
    gradebook keeps a short text or nothing."""
    import zipfile

    import h5py

    from conftest import small_model

    model = small_model()
    model.save(tmp_path / "plain.keras")
    model.save(tmp_path / "plain.h5")
    claims = {"number": 3.6, "megabyte": "3." * 2**19}
    for name, claim in claims.items():
        with zipfile.ZipFile(tmp_path / "plain.keras") as src, \
                zipfile.ZipFile(tmp_path / f"{name}.keras", "w") as out:
            for item in src.infolist():
                data = src.read(item) if item.filename != "metadata.json" else \
                    json.dumps({**json.loads(src.read(item)), "keras_version": claim}).encode()
                out.writestr(item, data)
    shutil.copyfile(tmp_path / "plain.h5", tmp_path / "int.h5")
    with h5py.File(tmp_path / "int.h5", "r+") as f:
        f.attrs["keras_version"] = 36
    said = {path.name: evaluator.evaluate(path).info.keras_version for path in sorted(tmp_path.glob("*.*"))
            if path.name not in ("plain.h5", "plain.keras")}
    assert said == {"number.keras": None, "megabyte.keras": "3." * 20, "int.h5": None}, said
    assert isinstance(evaluator.evaluate(tmp_path / "plain.keras").info.keras_version, str)  # a real one is kept
