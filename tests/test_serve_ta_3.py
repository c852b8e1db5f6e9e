"""grader serve as a TA reviews a class with it, round 3: what the last batch changed, from what to what ("was X,
now Y", a student's total and each task; "new" for a student graded for the first time), kept by the gradebook
when a batch replaces a result (and "not kept" for a result recorded before it was); and a refused override's
form back with what the TA typed in it, escaped and bounded, beside the reason it was refused.

One class (two batches recorded through ``Gradebook.record``, no notebook run) for the module, read through
Flask's test client; a copy of it for the upgrade from schema 3; Chromium once, for a refused form as the TA
sees it.  Tests touch different students, so their overrides do not meet."""
from __future__ import annotations

import html
import re
import shutil
import sqlite3

import pytest

from conftest import TUTORIAL6
from test_serve_browser import audit, browser, serving  # noqa: F401 (Chromium, a fixture; grader serve running)

pytest.importorskip("flask")


def _batch(book, assignment, scores, again=()):
    """One `grader grade` of ``scores`` ({student: {task: points}}; other tasks missing) into ``book``;
    ``again``: students recorded a second time in the same run (a retry), with the same scores."""
    from grader.records import Measurements, StudentResult, TaskResult

    run = book.begin_run(assignment, "test")
    for sid in [*scores, *again]:
        got = scores[sid]
        tasks = [TaskResult(t.id, t.title, got[t.id], t.points, "passed" if got[t.id] == t.points else "partial",
                            {}, f"{t.id} scored {got[t.id]:g}.", source=f"{t.id}.h5", optional=t.optional)
                 if t.id in got else
                 TaskResult(t.id, t.title, 0.0, t.points, "missing", {}, f"No model for {t.id}.", optional=t.optional)
                 for t in assignment.tasks]
        result = StudentResult(sid, sum(t.score for t in tasks), assignment.max_score, tasks)
        key = f"{sid}-{run}"
        book.record(assignment.id, run, sid, content_hash=key, files=[], measure_key=key, score_key=key,
                    measurements=Measurements(sid, [], [], [], {}, []).to_json(), result=result)
    book.finish_run(run, "finished", {})
    return run


@pytest.fixture(scope="module")
def klass(tmp_path_factory):
    """The class's output folder.  Batch 1: amy (1a 5, 1c 10), ben (1c 10), eve (1a 1), gus (1c 10), hal (1a
    2); a TA sets eve's 1a to 4.  Batch 2: amy's 1a falls to 3 (recorded twice, a retry in the same run), eve's
    1a is 2 by the grader (the TA's 4 stands, flagged), fay is graded for the first time, gus and hal again at
    the same scores; ben is not graded again."""
    from grader.spec import load_assignment
    from grader.store import Gradebook

    out = tmp_path_factory.mktemp("ta3") / "out"
    out.mkdir()
    assignment = load_assignment(TUTORIAL6)
    book = Gradebook(None, out)
    _batch(book, assignment, {"amy": {"1a": 5.0, "1c": 10.0}, "ben": {"1c": 10.0}, "eve": {"1a": 1.0},
                              "gus": {"1c": 10.0}, "hal": {"1a": 2.0}})
    book.override(assignment.id, "eve", "1a", 4.0, reason="the plot shows the fit", by="tara")
    _batch(book, assignment, {"amy": {"1a": 3.0, "1c": 10.0}, "eve": {"1a": 2.0}, "fay": {"1c": 7.0},
                              "gus": {"1c": 10.0}, "hal": {"1a": 2.0}}, again=["amy"])
    book.close()
    return out


@pytest.fixture
def client(klass):
    from grader.serve.app import create_app

    app = create_app(klass, token="the-token")
    client = app.test_client()
    assert client.get("/?token=the-token").status_code == 303
    yield client
    app.extensions["grader"]["gradebook"].close()


def _text(fragment: str) -> str:
    """A page's fragment as its reader sees it: tags out, entities read, spaces folded."""
    return re.sub(r" ([.,:;)])", r"\1", " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split()))


def _regraded(page: str) -> dict[str, str]:
    """The review page's "changed in the last batch", by student: each item's text."""
    block = page[page.index('<ul id="regraded">'):]
    return {sid: _text(item) for sid, item in re.findall(r'<li data-id="(\w+)">(.*?)</li>\s*(?=<li data-id|</ul>\s*$|'
                                                          r'</ul>\s*<)', block, re.S)}


def _task(page: str, task: str) -> str:
    start = page.index(f'id="task-{task}"')
    return page[start:page.index("</section>", start)]


def _form(block: str, cls: str = "override") -> str:
    form = block[block.index(f'<form class="{cls}"'):]
    return form[:form.index("</form>")]


def _value(form: str, name: str) -> str | None:
    found = re.search(rf'<input [^>]*name="{name}"[^>]*?(?: value="([^"]*)")?[^>]*>', form)
    tag = found[0] if found else ""
    value = re.search(r' value="([^"]*)"', tag)
    return html.unescape(value[1]) if value else None


def test_the_review_page_says_each_changed_student_was_x_now_y_and_which_tasks_moved(client):
    page = client.get("/review").get_data(as_text=True)
    items = _regraded(page)
    assert set(items) == {"amy", "eve", "fay", "gus", "hal"}  # ben was not graded again
    # amy: her 1a fell from 5 to 3; 1c did not move, so it is not listed; recorded twice in the batch, she was
    # 15 before it (not the 13 of the batch's own first record)
    assert items["amy"].startswith("amy: was 15, now 13 / 100 task 1a: was 5, now 3"), items["amy"]
    assert "1c" not in items["amy"]
    # eve: the TA's 4 stands over the grader's 1 then, 2 now
    assert "was 4, now 4 / 100 (the grader's own: was 1, now 2)" in items["eve"]
    assert "task 1a: was 4, now 4 (the grader's own: was 1, now 2)" in items["eve"]
    assert "✎! a TA's score to look at again: 1a" in items["eve"]
    assert items["fay"] == "fay: new: 7 / 100"
    assert items["gus"] == "gus: was 10, now 10 / 100 no task's score moved"
    assert '<a href="/student/amy#task-1a">task 1a</a>' in page


def test_a_students_page_says_what_the_last_batch_changed_of_their_total_and_each_task(client):
    amy = client.get("/student/amy").get_data(as_text=True)
    said = _text(amy[amy.index('id="last-batch"'):amy.index("</p>", amy.index('id="last-batch"'))])
    assert said.endswith("graded amy again: was 15, now 13 / 100."), said
    assert "Last batch: was 5, now 3" in _text(_task(amy, "1a"))
    assert "Last batch: was 10, now 10 (unchanged)" in _text(_task(amy, "1c"))
    assert "Last batch: new" not in amy
    fay = client.get("/student/fay").get_data(as_text=True)
    assert "graded fay for the first time: new: 7 / 100" in _text(fay)
    assert all("Last batch: new" in _text(_task(fay, t)) for t in ("1a", "1c"))
    ben = client.get("/student/ben").get_data(as_text=True)  # not graded by the last batch: nothing said
    assert 'id="last-batch"' not in ben and "Last batch:" not in ben


def test_an_override_after_the_batch_keeps_what_the_student_had_before_it(client, klass):
    from grader.store import Gradebook

    form = _form(_task(client.get("/student/hal").get_data(as_text=True), "1a"))
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
    done = client.post("/student/hal/override", data={**hidden, "points": "5", "reason": "full marks", "action": "set"})
    assert "set to 5 of 5" in _text(client.get(done.headers["Location"]).get_data(as_text=True))
    items = _regraded(client.get("/review").get_data(as_text=True))
    # the override rewrote hal's result: what he had before the batch is still the 2 the batch found unchanged
    assert "hal: was 2, now 5 / 100 (the grader's own: was 2, now 2)" in items["hal"], items["hal"]
    book = Gradebook(None, klass)
    try:
        batch = book.last_batch("tutorial6")
    finally:
        book.close()
    assert batch["previous"]["hal"]["score"] == 2.0 and batch["previous"]["fay"] == {"new": True}
    assert batch["previous"]["amy"]["tasks"]["1a"] == {"score": 5.0, "automatic": None}
    assert batch["previous"]["eve"]["tasks"]["1a"] == {"score": 4.0, "automatic": 1.0}


def test_a_schema_3_gradebook_opens_and_says_its_previous_scores_were_not_kept(klass, tmp_path):
    from grader.serve.app import create_app
    from grader.spec import load_assignment
    from grader.store import Gradebook

    out = tmp_path / "old"
    shutil.copytree(klass, out)
    c = sqlite3.connect(out / "gradebook.sqlite")  # as the previous grader wrote it
    c.executescript("alter table results drop column previous; "
                    "update meta set value = '3' where key = 'schema_version';")
    before = c.execute("select student, score, result from results order by student").fetchall()
    c.close()
    app = create_app(out, token="t")
    try:
        client = app.test_client()
        client.get("/?token=t")
        items = _regraded(client.get("/review").get_data(as_text=True))
        assert items["amy"] == "amy: now 13 / 100, was not kept (graded before the gradebook kept previous scores)"
        assert "what it was is not known" in _text(_task(client.get("/student/amy").get_data(as_text=True), "1a"))
    finally:
        app.extensions["grader"]["gradebook"].close()
    c = sqlite3.connect(out / "gradebook.sqlite")
    assert c.execute("select value from meta where key = 'schema_version'").fetchone() == ("4",)
    assert c.execute("select student, score, result from results order by student").fetchall() == before
    c.close()
    # the next batch keeps them again
    book = Gradebook(None, out)
    try:
        _batch(book, load_assignment(TUTORIAL6), {"amy": {"1a": 4.0, "1c": 10.0}})
        assert book.last_batch("tutorial6")["previous"]["amy"]["score"] == 13.0
    finally:
        book.close()


def _post(client, sid: str, task: str, cls: str = "override", **fields):
    """Send the task's form as drawn, with ``fields`` typed in it: the page it lands on, and the response."""
    form = _form(_task(client.get(f"/student/{sid}").get_data(as_text=True), task), cls)
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
    sent = client.post(f"/student/{sid}/override", data={**hidden, **fields})
    assert sent.status_code == 303 and all(len(c) < 4096 for c in sent.headers.getlist("Set-Cookie"))
    return client.get(sent.headers["Location"]).get_data(as_text=True)


def test_a_refused_override_comes_back_with_what_the_ta_typed_escaped_beside_why(client, klass):
    from grader.textsafe import visible

    hostile = '<script>alert("x")</script> & "quoted" \'too\''
    for points, reason, said in (("12", hostile, "task 1c is worth 0 to 10 points, not 12"),  # out of range
                                 ("7", "   ", "Give a reason"), ("seven", "a fine reason", "points as a number"),
                                 ("6", "checked \x1b[31m by hand \u202e", "the reason holds")):
        page = _post(client, "gus", "1c", points=points, reason=reason, by="tara <b>", action="set")
        block = _task(page, "1c")
        assert said in _text(block[:block.index("<details")]), (said, _text(block))
        assert "<details" in block and " open data-refused" in block  # open, to be put right
        form = _form(block)
        assert (_value(form, "points"), _value(form, "reason"), _value(form, "by")) == (points, visible(reason),
                                                                                        "tara <b>")
        assert "<script>alert" not in page and "<b>" not in page and "\x1b" not in page and "\u202e" not in page
        # the page drawn again has the form as drawn
        again = _form(_task(client.get("/student/gus").get_data(as_text=True), "1c"))
        assert (_value(again, "points"), _value(again, "reason")) == ("10", None)
    # a reason past the CLI's 2000 characters: refused, and back cut at them
    page = _post(client, "gus", "1c", points="9", reason="long " * 1000, action="set")
    assert "the reason is 5000 characters long (at most 2000)" in _text(_task(page, "1c"))
    assert _value(_form(_task(page, "1c")), "reason") == ("long " * 400)[:2000]
    assert [r for r in audit(klass) if r[0] == "gus"] == []  # nothing written


def test_a_form_refused_because_another_ta_changed_the_task_keeps_what_was_typed(client, klass):
    from grader.store import Gradebook

    page = client.get("/student/amy").get_data(as_text=True)
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', _form(_task(page, "1c"))))
    book = Gradebook(None, klass)  # meanwhile, another TA
    try:
        book.override("tutorial6", "amy", "1c", 8.0, reason="ann's reason", by="ann")
    finally:
        book.close()
    sent = client.post("/student/amy/override", data={**hidden, "points": "9", "reason": "my long look at it",
                                                      "action": "set"})
    page = client.get(sent.headers["Location"]).get_data(as_text=True)
    assert _value(_form(_task(page, "1a")), "reason") is None  # the other tasks' forms as drawn
    block = _task(page, "1c")
    assert "Another TA changed this task since you opened the page: ann set it to 8" in _text(block)
    assert (_value(_form(block), "points"), _value(_form(block), "reason")) == ("9", "my long look at it")
    # a refused undo keeps its reason in the undo form, the override form as drawn
    block = _task(_post(client, "amy", "1c", cls="undo", reason="bad\x07bell", action="undo"), "1c")
    assert "the reason holds" in _text(block)
    assert _value(_form(block, "undo"), "reason") == "bad\\x07bell" and _value(_form(block), "reason") is None


def test_the_forms_kept_for_refused_pages_are_bounded(client):
    from grader.serve.app import MAX_KEPT_FORMS, MAX_POINTS_CHARS

    kept = client.application.extensions["grader"]["typed"]
    page = client.get("/student/ben").get_data(as_text=True)
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', _form(_task(page, "1c"))))
    for n in range(MAX_KEPT_FORMS + 5):  # refused, their pages never drawn
        client.post("/student/ben/override", data={**hidden, "points": "9" * 1000, "reason": "", "action": "set"})
    assert len(kept) == MAX_KEPT_FORMS
    assert {len(typed["points"]) for typed in kept.values()} == {MAX_POINTS_CHARS}


@pytest.mark.slow  # a real Chromium
def test_in_the_browser_a_refused_form_is_open_with_what_the_ta_typed(browser, klass):
    """The page's script opens the refused form without putting the drawn score over what was typed, and the
    message takes the focus."""
    from grader.store import Gradebook

    with serving(klass, "--by", "tara") as url:
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.goto(url)
        page.goto(page.url.split("?")[0] + "student/eve")
        page.click("#override-1a summary")
        book = Gradebook(None, klass)  # another TA undoes eve's override meanwhile
        try:
            book.override("tutorial6", "eve", "1a", None, reason="", by="ann")
        finally:
            book.close()
        form = page.locator("#task-1a form.override")
        form.locator("input[name=points]").fill("3.5")
        form.locator("input[name=reason]").fill("the fit is good <i>enough</i>")
        with page.expect_navigation():
            form.locator("button[value=set]").click()
        page.locator("#task-1a .flash.refused").wait_for()
        page.wait_for_load_state()
        assert "ann undid its override" in page.inner_text("#task-1a .flash.refused")
        assert page.evaluate("document.activeElement.classList.contains('flash')")
        form = page.locator("#task-1a form.override")
        assert form.is_visible()
        assert form.locator("input[name=points]").input_value() == "3.5"
        assert form.locator("input[name=reason]").input_value() == "the fit is good <i>enough</i>"
        assert page.locator("#task-1a i").count() == 0
