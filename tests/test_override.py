"""Manual review with an audit trail (`grader override`, `grader review`) and identical work flagged, on a
class of real Keras models and real notebooks graded for real: an override is kept with who, when, why and
the score it replaced, shows in every report and export, outlives re-grades and re-scores, is flagged when
the grader's own score changes, and a gradebook of the previous schema is upgraded in place."""
import csv
import json
import shutil
import sqlite3
from pathlib import Path

import nbformat
import pytest

from conftest import TUTORIAL6
from test_batch import DEMO, gradebook_rows, grader

#: a notebook's 2c without the work: "trained" with a learning rate of 0, so the grader refuses its training
LR0_2C = """import numpy as np
import keras
from tools import gen_simple_circular_distribution
keras.utils.set_random_seed(3)
model = keras.Sequential([keras.Input((2,))] + [keras.layers.Dense(6, activation='relu') for _ in range(3)]
                         + [keras.layers.Dense(2, activation='softmax')])
X, y = gen_simple_circular_distribution(400, scale=2)
model.compile(loss='categorical_crossentropy', optimizer=keras.optimizers.SGD(learning_rate=0.0))
model.fit(X[:40], keras.utils.to_categorical(y[:40], 2), epochs=5, verbose=0)
"""


def _same_code_as_a_notebook(source: str) -> nbformat.NotebookNode:
    """``source`` as another student hands it in: a notebook with a title, split into cells, re-spaced."""
    lines = source.splitlines()
    respaced = [line.replace(", ", ",   ").replace(" = ", "  =  ") + "   " for line in lines]
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Olga's tutorial 6"),
        nbformat.v4.new_code_cell("\n".join(respaced[:4])),
        nbformat.v4.new_code_cell("\n\n".join(respaced[4:]))])


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A class graded once: two demo students, a copy of alice's 1c (mallory), of her hand-set 1b (oscar), and
    the same notebook code as a script (nina) and re-spaced as a notebook (olga)."""
    klass = tmp_path_factory.mktemp("class")
    for who in ("alice", "bob"):
        shutil.copytree(DEMO / who, klass / who)
    for who, name, source in (("mallory", "1c.h5", "1c.h5"), ("oscar", "1b.h5", "1b.h5")):
        (klass / who).mkdir()
        shutil.copy(DEMO / "alice" / source, klass / who / name)
    (klass / "nina").mkdir()
    (klass / "nina" / "work.py").write_text(LR0_2C)
    (klass / "olga").mkdir()
    nbformat.write(_same_code_as_a_notebook(LR0_2C), klass / "olga" / "tut6.ipynb")
    out = tmp_path_factory.mktemp("out") / "tutorial6"
    proc = grader("grade", klass, "-a", TUTORIAL6, "-o", out, "--workers", 2, "--allow-unsandboxed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return klass, out


def _copy(graded, tmp_path) -> Path:
    out = tmp_path / "tutorial6"
    shutil.copytree(graded[1], out)
    return out


def _student(out: Path, sid: str) -> dict:
    return next(s for s in json.loads((out / "results.json").read_text())["students"] if s["id"] == sid)


def _task(student: dict, tid: str) -> dict:
    return next(t for t in student["tasks"] if t["id"] == tid)


def _audit(out: Path) -> list[dict]:
    c = sqlite3.connect(f"file:{out / 'gradebook.sqlite'}?mode=ro", uri=True)
    c.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in c.execute("""select s.student_id, o.* from overrides o
                                               join students s on s.id = o.student order by o.id""")]
    finally:
        c.close()


def _review(out: Path) -> dict:
    proc = grader("review", "-o", out.parent, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_an_override_is_kept_with_its_reason_and_shown_in_every_report_and_export(graded, tmp_path):
    out = _copy(graded, tmp_path)
    before = _student(out, "bob")
    assert _task(before, "1c")["status"] == "failed" and _task(before, "1c")["score"] == 0
    # the commands find the gradebook as `grader export` does: the one below the folder given
    proc = grader("override", "bob", "1c", 8, "--reason", "right model, saved under the wrong name", "--by",
                  "Dr. T", "-o", out.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Re-drew results.json" in proc.stderr

    [row] = _audit(out)
    assert (row["student_id"], row["task_id"], row["action"], row["points"]) == ("bob", "1c", "set", 8.0)
    assert (row["by"], row["reason"]) == ("Dr. T", "right model, saved under the wrong name")
    assert (row["replaced_score"], row["replaced_status"]) == (0.0, "failed") and row["at"][:2] == "20"

    bob = _student(out, "bob")
    task = _task(bob, "1c")
    assert bob["score"] == before["score"] + 8 and bob["automatic"]["score"] == before["score"]
    assert (task["score"], task["status"]) == (8.0, "partial")
    assert task["override"]["automatic"] == {k: _task(before, "1c")[k] for k in ("score", "status", "message")}
    assert task["override"]["needs_review"] is False and task["message"].startswith("Score set on review by Dr. T")
    rows, _, _ = gradebook_rows(out)
    assert ("bob", bob["score"], "1c", 8.0, "partial") in [r[:5] for r in rows]

    page = (out / "students" / "bob.html").read_text()
    assert "right model, saved under the wrong name" in page and "Dr. T" in page
    assert "The grader's own score: 0 / 10 (failed)" in page and 'id="override-1c"' in page
    index = (out / "index.html").read_text()
    assert 'class="status partial overridden"' in index and "✎" in index

    export = tmp_path / "export"
    proc = grader("export", "-o", out, "--to", export)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(export / "grades.csv", newline="") as f:
        by_id = {r["student_id"]: r for r in csv.DictReader(f)}
    assert (by_id["bob"]["task_1c"], by_id["bob"]["overridden"], by_id["alice"]["overridden"]) == ("8", "1c", "")
    assert float(by_id["bob"]["total"]) == bob["score"]
    gradescope = json.loads((export / "gradescope" / "bob" / "results.json").read_text())
    test = next(t for t in gradescope["tests"] if t["number"] == "1c")
    assert gradescope["score"] == bob["score"] and test["score"] == 8.0 and "overridden" in test["tags"]
    assert "scored on review by a TA" in gradescope["output"]
    from junitparser import Failure, JUnitXml

    suite = next(s for s in JUnitXml.fromfile(str(export / "junit.xml")) if s.name == "bob")
    case = next(c for c in suite if c.name == "task 1c")
    assert [type(r) for r in case.result] == [Failure] and "overridden on review" in case.result[0].message
    assert {p.name: p.value for p in suite.properties()}["overridden"] == "1c"
    summary = (export / "summary.md").read_text()
    assert "🟡✎" in summary and "**1c** (partial, overridden, 8/10)" in summary

    # undone: the grader's score stands again, and the trail keeps both
    proc = grader("override", "bob", "1c", "--undo", "--reason", "the file was not bob's", "-o", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _student(out, "bob") == before
    undo = _audit(out)[-1]
    assert (undo["action"], undo["points"], undo["reason"]) == ("undo", None, "the file was not bob's")
    import getpass

    assert undo["by"] == getpass.getuser()  # the OS user, unless --by
    index = (out / "index.html").read_text()
    assert "overridden" not in index[index.index('<table id="students">'):].split("</table>")[0]


def test_an_undo_needs_no_reason_and_the_trail_records_it_either_way(graded, tmp_path):
    out = _copy(graded, tmp_path)
    before = _student(out, "bob")
    proc = grader("override", "bob", "1c", 8, "-o", out)  # setting a score still needs a reason
    assert proc.returncode == 2 and "needs a reason" in proc.stderr and _audit(out) == []
    assert grader("override", "bob", "1c", 8, "--reason", "right model, wrong name", "-o", out).returncode == 0
    proc = grader("override", "bob", "1c", "--undo", "-o", out)  # no --reason
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "undid the override" in proc.stderr and _student(out, "bob") == before
    assert [(r["action"], r["reason"]) for r in _audit(out)] == [("set", "right model, wrong name"), ("undo", "")]


def test_what_cannot_be_overridden_is_refused_and_nothing_is_written(graded, tmp_path):
    from grader.store import OutputLock

    out = _copy(graded, tmp_path)
    for args, said in [(("bob", "9z", 3), "has no task '9z'"), (("bob", "1c", 11), "worth 0 to 10 points"),
                       (("nobody", "1c", 3), "no result for a student 'nobody'"),
                       (("bob", "1c", "--undo"), "no override to undo")]:
        proc = grader("override", *args, "--reason", "checked", "-o", out)
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr
    proc = grader("override", "bob", "1c", 3, "--reason", " ", "-o", out)
    assert proc.returncode == 2 and "needs a reason" in proc.stderr
    with OutputLock(out):  # a grader is writing to this class: its pages would lose the override
        proc = grader("override", "bob", "1c", 3, "--reason", "checked", "-o", out)
    assert proc.returncode == 2 and "another grader" in proc.stderr
    assert _audit(out) == []


def test_an_override_sets_the_total_and_the_letter_grade_and_applies_once(graded):
    import copy

    from grader.store.overrides import apply_overrides

    bob = _student(graded[1], "bob")
    bob["grade"] = "F"  # as graded under bands (tutorial6 has none)
    original = copy.deepcopy(bob)
    bands = [["A", 70], ["B", 25], ["F", 0]]
    in_force = {"1c": {"points": 10.0, "by": "ta", "at": "2030-01-02T03:04:05+00:00", "reason": "checked",
                       "replaced_score": 0.0, "replaced_status": "failed"}}
    once = apply_overrides(copy.deepcopy(bob), in_force, bands)
    assert once["score"] == bob["score"] + 10 and once["grade"] == "B"
    assert once["automatic"] == {"score": bob["score"], "grade": "F"}
    assert _task(once, "1c")["status"] == "passed"  # full marks
    assert apply_overrides(copy.deepcopy(once), in_force, bands) == once  # applying again changes nothing
    assert apply_overrides(once, {}, bands) == original  # nothing in force: the grader's result, as it was


def _set_threshold(spec: Path, task: str, metric: str, key: str, value: float) -> None:
    text = (spec / "calibration.toml").read_text()
    start = text.index(f'[tasks."{task}".{metric}]')
    line = text.index(f"\n{key} = ", start) + 1
    end = text.index("\n", line)
    (spec / "calibration.toml").write_text(text[:line] + f"{key} = {value!r}" + text[end:])


def test_overrides_outlive_regrades_and_are_flagged_when_the_graders_score_changes(graded, tmp_path):
    klass, _ = graded
    out = _copy(graded, tmp_path)
    proc = grader("override", "bob", "1c", 8, "--reason", "right model, wrong name", "-o", out)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # bob hands in one more file: he is graded again, the grader's score is the same, the override stands
    extra = klass / "bob" / "README.txt"
    extra.write_text("my models")
    try:
        proc = grader("grade", klass, "-a", TUTORIAL6, "-o", out, "--allow-unsandboxed")
    finally:
        extra.unlink()
    assert proc.returncode == 0 and "(1 run," in proc.stderr, proc.stderr[-3000:]  # bob alone
    task = _task(_student(out, "bob"), "1c")
    assert task["score"] == 8.0 and task["override"]["needs_review"] is False

    # thresholds change: a re-score gives bob's 1c partial credit of its own, so a TA must look again
    spec = tmp_path / "spec"
    shutil.copytree(TUTORIAL6, spec)
    mse = _task(_student(out, "mallory"), "1c")["metrics"]["mse"]
    _set_threshold(spec, "1c", "mse", "partial", 0.01)  # bob's 1c (mse 0.005) now earns partial credit
    _set_threshold(spec, "1c", "mse", "pass", mse * 1.01)  # mallory's and alice's 1c pass by a hair
    proc = grader("grade", klass, "-a", spec, "-o", out, "--allow-unsandboxed")
    assert proc.returncode == 0 and "0 run, 6 re-scored, 0 unchanged" in proc.stderr, proc.stderr[-3000:]
    task = _task(_student(out, "bob"), "1c")
    automatic = task["override"]["automatic"]
    assert task["score"] == 8.0 and 0 < automatic["score"] < 8 and automatic["status"] == "partial"
    assert task["override"]["needs_review"] is True and task["override"]["replaced"]["score"] == 0.0
    assert "Needs review" in (out / "students" / "bob.html").read_text()
    assert "needs-review" in (out / "index.html").read_text()

    items = _review(out)["items"]
    flagged = [i for i in items if i["kind"] == "override needs review"]
    assert [(i["students"], i["task"]) for i in flagged] == [(["bob"], "1c")]
    assert f"is {automatic['score']:g} now" in flagged[0]["detail"]
    near = {(i["students"][0], i["task"]) for i in items if i["kind"] == "near threshold"}
    assert {("alice", "1c"), ("mallory", "1c")} <= near and ("bob", "1c") not in near  # overridden: decided

    # a TA looks again and confirms: the flag goes, the trail keeps both decisions
    proc = grader("override", "bob", "1c", 8, "--reason", "checked after the new thresholds", "-o", out)
    assert proc.returncode == 0 and "Re-drew" in proc.stderr, proc.stderr[-3000:]  # the spec folder is known
    assert _task(_student(out, "bob"), "1c")["override"]["needs_review"] is False
    assert not [i for i in _review(out)["items"] if i["kind"] == "override needs review"]
    assert [r["replaced_score"] for r in _audit(out)] == [0.0, automatic["score"]]


def test_review_lists_what_needs_a_human_and_the_class_page_lists_identical_work(graded, tmp_path):
    out = _copy(graded, tmp_path)
    found = _review(out)
    kinds = {(i["kind"], tuple(i["students"]), i["task"]) for i in found["items"]}
    assert {("training refused", ("nina",), "2c"), ("training refused", ("olga",), "2c")} <= kinds
    assert not [k for k in kinds if k[0] == "inferred task"]  # alice's model.h5 is clearly 2a (2b far behind)
    groups = {tuple(g["students"]): g["evidence"] for g in found["identical"]}
    # a script and a re-spaced notebook: the same code (which seeds itself, so the same weights too)
    assert "code" in [e["kind"] for e in groups[("nina", "olga")]]
    assert groups[("nina", "olga")][0]["files"] == {"nina": ["work.py"], "olga": ["tut6.ipynb"]}
    assert {"kind": "models", "what": "identical model files", "files": {"alice": ["1c.h5"], "mallory": ["1c.h5"]}} \
        in groups[("alice", "mallory")]
    assert not any("oscar" in g for g in groups)  # 1b's weights are set by hand: every right answer is the same
    assert ("identical work", ("nina", "olga"), None) in kinds and found["not_fingerprinted"] == []
    index = (out / "index.html").read_text()
    identical = index[index.index('id="identical-work"'):]
    assert "mallory" in identical and "nina" in identical and "oscar" not in identical

    # a grader failure on a student (as the batch records one) is the first thing listed
    from grader.measure import Measurements
    from grader.pipeline import _internal_error
    from grader.spec import load_assignment
    from grader.store import Gradebook

    assignment = load_assignment(TUTORIAL6)
    result = _internal_error(assignment, "zoe", RuntimeError("the worker's reply was cut short"))
    gradebook = Gradebook(None, out)
    try:
        run = gradebook.begin_run(assignment, "this test")
        gradebook.record(assignment.id, run, "zoe", content_hash="0" * 64, files=[], measure_key="retry-zoe",
                         score_key="zoe", measurements=Measurements("zoe", [], result.notes, [], {}, []).to_json(),
                         result=result)
        gradebook.finish_run(run, "finished", {})
    finally:
        gradebook.close()
    first = _review(out)["items"][0]
    assert (first["kind"], first["students"]) == ("internal error", ["zoe"])
    assert "RuntimeError: the worker's reply was cut short" in first["detail"]
    table = grader("review", "-o", out)
    assert table.returncode == 0 and "internal error" in table.stdout and "identical work" in table.stdout
    assert "zoe" in table.stdout and "nina" in table.stdout


def test_a_gradebook_of_the_previous_schema_is_upgraded_in_place(graded, tmp_path):
    klass, _ = graded
    out = _copy(graded, tmp_path)
    c = sqlite3.connect(out / "gradebook.sqlite")  # back to schema 1, as the previous grader wrote it
    c.executescript("""drop table overrides; alter table assignments drop column grade_bands;
                       alter table assignments drop column spec_folder; alter table submissions drop column identity;
                       alter table runs drop column versions;
                       update meta set value = '1' where key = 'schema_version';""")
    c.close()
    rows_before = gradebook_rows(out)

    found = _review(out)  # opening it upgrades it; every result is still there
    assert found["not_fingerprinted"] == ["alice", "bob", "mallory", "nina", "olga", "oscar"] and not found["identical"]
    c = sqlite3.connect(out / "gradebook.sqlite")
    assert c.execute("select value from meta where key = 'schema_version'").fetchone() == ("4",)
    assert {r[1] for r in c.execute("pragma table_info(submissions)")} >= {"identity", "measurements"}
    assert {r[1] for r in c.execute("pragma table_info(runs)")} >= {"versions"}
    c.close()
    assert gradebook_rows(out) == rows_before

    # an override works at once; the pages wait for the assignment folder, the exports do not
    proc = grader("override", "bob", "1c", 8, "--reason", "right model, wrong name", "-o", out)
    assert proc.returncode == 0 and "not re-drawn" in proc.stderr, proc.stderr[-3000:]
    proc = grader("export", "-o", out, "--to", tmp_path / "export", "--format", "csv")
    assert proc.returncode == 0 and ",1c\n" in (tmp_path / "export" / "grades.csv").read_text()
    # the next `grader grade` runs nothing again: it re-draws bob's page and looks for identical work
    proc = grader("grade", klass, "-a", TUTORIAL6, "-o", out, "--allow-unsandboxed")
    assert proc.returncode == 0 and "(0 run," in proc.stderr, proc.stderr[-3000:]
    assert _task(_student(out, "bob"), "1c")["score"] == 8.0
    assert "right model, wrong name" in (out / "students" / "bob.html").read_text()
    found = _review(out)
    assert found["not_fingerprinted"] == [] and ["nina", "olga"] in [g["students"] for g in found["identical"]]
