"""What `grader review` ranks first: a task that could not be graded (carol's truncated 2a.h5) above everything
else, and an inferred task only where another task was nearly as likely."""
import shutil

from conftest import ROOT, grade_one, small_model, task_of
from grader.review import KINDS, SEVERITY, ReviewRow, review_items, review_rows

DEMO = ROOT / "submissions" / "tutorial6"


def _scored(assignment, likeliest_first: list[str]):
    """A student whose one model (two hidden ReLU layers: no task's layers) was fitted on data that the named
    datasets may have given, likeliest first: accurate on 2a's circles, fair on 2c's overlapping ones."""
    from grader import keras_io
    from grader.records import DatasetResult, Evaluation, Measurements, Provenance, Source
    from grader.score import score_student

    info = keras_io.describe(small_model(hidden=((6, "relu"), (6, "relu"))))
    baseline = {"majority_baseline": 0.667}
    evaluation = Evaluation(info=info, provenance=Provenance("fit"), datasets={
        "circle": DatasetResult({"accuracy": 0.9, **baseline}),
        "circle_overlap": DatasetResult({"accuracy": 0.75, "train_accuracy": 0.78, "gap": 0.03, **baseline})})
    source = Source("tut6.ipynb, fit 1", "keras", dataset=likeliest_first[0], datasets=likeliest_first)
    return score_student(assignment, Measurements("s", [], [], [], {}, [(source, evaluation)]))


def test_a_truncated_h5_is_ranked_first_and_its_reason_has_no_file_format_internals(assignment, evaluator, tmp_path):
    from grader.pipeline import _internal_error

    klass = tmp_path / "class"
    shutil.copytree(DEMO / "carol", klass / "carol")  # the demo's carol: a good 1c.h5, a truncated 2a.h5
    carol = grade_one(assignment, evaluator, klass, "carol")
    assert task_of(carol, "2a").status == "error"
    close = _scored(assignment, ["circle_overlap", "circle"])  # an inferred task worth a look
    clear = _scored(assignment, ["circle"])
    clear.id = "amy"
    zoe = _internal_error(assignment, "zoe", RuntimeError("the worker's reply was cut short"))
    identical = [{"students": ["amy", "s"], "evidence": [
        {"kind": "code", "what": "identical code", "files": {"amy": ["a.py"], "s": ["b.py"]}}]}]
    results = [r.to_json() for r in (clear, carol, close, zoe)]

    items = review_items(results, identical)
    assert [i["rank"] for i in items] == list(range(1, len(items) + 1))
    got = [(i["kind"], i["students"], i["task"]) for i in items]
    assert got[0][:2] == ("internal error", ["zoe"])
    assert got[1] == ("could not be graded", ["carol"], "2a")  # was not listed at all before
    assert got[2:] == [("identical work", ["amy", "s"], None), ("inferred task", ["s"], "2c")]
    assert [i["severity"] for i in items] == ["error", "error", "check", "note"]
    detail = items[1]["detail"]
    assert "truncated or not an HDF5 Keras file" in detail and "sblock" not in detail and "eof" not in detail

    rows = review_rows(items)
    assert all(isinstance(r, ReviewRow) for r in rows)
    assert (rows[1].rank, rows[1].student, rows[1].task, rows[1].severity) == (2, "carol", "2a", "error")
    assert rows[2].student == "amy, s" and rows[2].reason.startswith("identical code")
    assert set(KINDS) == set(SEVERITY)


def test_an_inference_is_listed_only_when_another_task_was_nearly_as_likely(assignment):
    # its data may be 2c's (likeliest) or 2a's: graded as 2c, though on 2a's data it earns more
    close = _scored(assignment, ["circle_overlap", "circle"])
    t = task_of(close, "2c")
    assert t.inferred and t.metrics["inferred_close"] == 1.0
    assert "task 2a was nearly as likely" in t.message
    (item,) = review_items([close.to_json()], [])
    assert (item["kind"], item["task"], item["severity"]) == ("inferred task", "2c", "note")
    assert "task 2a was nearly as likely" in item["detail"]

    # its data can only be 2a's: the one candidate, a clear inference, nothing to review
    clear = _scored(assignment, ["circle"])
    t = task_of(clear, "2a")
    assert t.inferred and t.metrics["inferred_close"] == 0.0 and "nearly as likely" not in t.message
    assert review_items([clear.to_json()], []) == []

    # a result scored before closeness was kept: listed, as every inference was then
    old = clear.to_json()
    for task in old["tasks"]:
        task["metrics"].pop("inferred_close", None)
    assert [(i["kind"], i["task"]) for i in review_items([old], [])] == [("inferred task", "2a")]


def test_a_clear_exact_match_is_not_listed(assignment, evaluator, tmp_path):
    # the demo's frank: a trained 3-ReLU network (1a) and the hand-set one (1b) share an architecture; each
    # is told apart by its fit, far from the other task's: neither is a close call
    import numpy as np

    from grader.records import Evaluation, Measurements, Source
    from grader.score import score_student

    model = small_model(hidden=((3, "relu"),), inputs=1, outputs=(1, "linear"))
    kernel, bias, out = (np.array([[0.5, 1.75, 1.25]]), np.array([-0.05, -1.05, -1.0]), np.array([1.0, -1.0, 1.0]))
    model.layers[0].set_weights([kernel, bias])
    model.layers[1].set_weights([out.reshape(3, 1), np.zeros(1)])
    model.save(tmp_path / "hand.keras")
    evaluation = evaluator.evaluate(tmp_path / "hand.keras")
    result = score_student(assignment, Measurements("s", [], [], [], {}, [
        (Source("hand.keras", evaluation.format, dataset="curve"), evaluation)]))
    b = task_of(result, "1b")
    assert b.inferred and b.status == "passed" and "they fit task 1a too" in b.message, b.message
    assert b.metrics["inferred_close"] == 0.0
    assert review_items([result.to_json()], []) == []
