"""The typed records on a real gradebook: a demo student graded by the real pipeline (a submitted .h5 of the demo
class, a script whose fit the sandbox captures), its stored measurements read back as records and written again
byte for byte; a row stored before the later keys were kept reads and scores as it did; a resumed batch goes on."""
import copy
import shutil

from conftest import ROOT, TUTORIAL6, needs_sandbox
from test_validity import SHEET_2A
from grader.records import DatasetResult, Evaluation, Measurements, ModelInfo, Provenance, StudentResult
from grader.score import score_student
from grader.spec import load_assignment
from grader.store import Gradebook, codec


def _stored_class(tmp_path):
    """One student graded into a gradebook: bob's 1c.h5 of the demo class, and the sheet's 2a as a script."""
    from grader.pipeline import grade_batch

    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    shutil.copyfile(ROOT / "submissions" / "tutorial6" / "bob" / "1c.h5", folder / "1c.h5")
    (folder / "work.py").write_text(SHEET_2A)
    summary = grade_batch(tmp_path / "subs", TUTORIAL6, tmp_path / "out", workers=1)
    return summary, tmp_path / "out"


def _read(out):
    book = Gradebook(None, out)
    try:
        return book.current_measurements("tutorial6", "s"), book.results("tutorial6", ["s"])[0]
    finally:
        book.close()


def _older(stored: dict) -> dict:
    """``stored`` as a gradebook kept it before provenance, the Keras version of a model, the plots' data and a
    source's datasets were kept, with a key of the worker's that no field names."""
    old = copy.deepcopy(stored)
    for source, evaluation in old["evaluated"]:
        source.pop("datasets", None)
        evaluation.pop("provenance", None)
        evaluation["info"].pop("keras_version", None)
        evaluation["info"]["worker_note"] = "kept"
        for entry in evaluation["datasets"].values():
            entry.pop("plot", None)
    return old


@needs_sandbox
def test_a_real_gradebooks_rows_are_typed_records_written_back_byte_for_byte(tmp_path):
    summary, out = _stored_class(tmp_path)
    stored, result = _read(out)
    measured = Measurements.from_json(stored)
    assert codec.encode(measured.to_json()) == codec.encode(stored)  # every key, value and order as stored
    by_name = {source.name: evaluation for source, evaluation in measured.evaluated}
    fits = [e for name, e in by_name.items() if name.startswith("work.py, ")]
    assert fits and by_name["1c.h5"].provenance == Provenance("file")
    fit = fits[0]
    assert isinstance(fit, Evaluation) and isinstance(fit.info, ModelInfo) and isinstance(fit.provenance, Provenance)
    assert fit.provenance.made_by == "fit" and fit.provenance.samples == 200 and fit.provenance.classes == 2
    assert fit.info.inputs == 2 and fit.info.outputs == 2 and fit.info.parameters == 42
    assert fit.info.dense == ((4, "relu"), (4, "relu"), (2, "softmax")) and fit.info.finite
    circle = fit.datasets["circle"]
    assert isinstance(circle, DatasetResult) and 0 <= circle.metrics["accuracy"] <= 1
    assert circle.plot["grid"].shape == (circle.plot["grid"].shape[0],) * 2  # the arrays, as the codec gave them
    assert by_name["1c.h5"].info.inputs == 1 and "mse" in by_name["1c.h5"].datasets["curve"].metrics
    # scored again from the records read back: the grades and messages stored
    again = score_student(load_assignment(TUTORIAL6), measured).to_json()
    assert [(t["id"], t["score"], t["status"], t["message"]) for t in again["tasks"]] == \
        [(t["id"], t["score"], t["status"], t["message"]) for t in result["tasks"]]
    assert StudentResult.from_json(result).to_json() == result

    # a row of an older gradebook: read, written back as it was stored, scored as the full row is
    old = _older(stored)
    measured_old = Measurements.from_json(old)
    written = measured_old.to_json()
    assert codec.encode({**written, "evaluated": []}) == codec.encode({**old, "evaluated": []})
    for (source, evaluation), (old_source, old_evaluation) in zip(written["evaluated"], old["evaluated"], strict=True):
        # as Source and Evaluation wrote such a row before their fields were typed: its datasets, a null provenance
        assert source == {**old_source, "datasets": [old_source["dataset"]] if old_source["dataset"] else []}
        assert evaluation.pop("provenance") is None
        assert codec.encode(evaluation) == codec.encode(old_evaluation)  # the info, datasets, retraining as stored
    (_, e_old), = [(s, e) for s, e in measured_old.evaluated if s.name == "1c.h5"]
    assert e_old.provenance is None and e_old.info.keras_version is None and e_old.info.extra == {"worker_note": "kept"}
    assert e_old.datasets["curve"].plot is None and e_old.made_by is None
    assert "keras_version" not in e_old.to_json()["info"] and "plot" not in e_old.to_json()["datasets"]["curve"]
    rescored = score_student(load_assignment(TUTORIAL6), measured_old).to_json()
    assert [(t["id"], t["score"]) for t in rescored["tasks"] if t["id"] == "1c"] == \
        [(t["id"], t["score"]) for t in again["tasks"] if t["id"] == "1c"] != []

    # the batch resumed: its stored rows are read back (its pages from them), nothing measured again
    from grader.pipeline import grade_batch

    resumed = grade_batch(tmp_path / "subs", TUTORIAL6, out, workers=1)
    assert resumed.students == summary.students == 1 and not resumed.counts.get("measured"), resumed.counts
    stored_again, result_again = _read(out)
    assert codec.encode(stored_again) == codec.encode(stored) and result_again == result
    assert (out / "students" / "s.html").is_file()
