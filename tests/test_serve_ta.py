"""grader serve as a TA defending a class's marks uses it: from a task's mark to the cell that trained its model,
from a failed cell's explanation to the cell as it ran, a run cut short by a time limit found from the review
queue, and the students walked through in the order the class table was sorted in.

A real gradebook (SQLite) holding a small class recorded through ``Gradebook.record``, real pages
(``render_reports``), the real Flask app through its test client."""
from __future__ import annotations

import html
import re

import nbformat
import pytest

from conftest import TUTORIAL6
from test_serve_browser import browser, serving  # noqa: F401 (Chromium, a fixture; grader serve running)

pytest.importorskip("flask")


def _notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


def _record(out, students):
    """Record ``students`` ({id: (scores by task, extra StudentResult fields, executed notebooks)}) and draw
    the class's pages."""
    from grader.pipeline import render_reports
    from grader.records import Measurements, StudentResult, TaskResult
    from grader.spec import load_assignment
    from grader.store import Gradebook

    assignment = load_assignment(TUTORIAL6)
    book = Gradebook(None, out)
    run = book.begin_run(assignment, "test")
    for i, (sid, (scores, extra, ran)) in enumerate(students.items()):
        tasks = []
        for t in assignment.tasks:
            got, source = scores.get(t.id, (0.0, None))
            status = "passed" if got == t.points else "partial" if got else "failed" if source else "missing"
            tasks.append(TaskResult(t.id, t.title, got, t.points, status, {}, f"{sid}: {t.id} scored {got:g}.",
                                    source=source, optional=t.optional))
        result = StudentResult(sid, sum(t.score for t in tasks), assignment.max_score, tasks, **extra)
        measured = Measurements(sid, [], [], [], {}, [])
        measured.executed = ran
        book.record(assignment.id, run, sid, content_hash=f"h{i}", files=[], measure_key=f"m{i}",
                    score_key=f"s{i}", measurements=measured.to_json(), result=result)
    book.finish_run(run, "finished", {})
    book.close()
    render_reports(TUTORIAL6, out)


def _client(out):
    from grader.serve.app import create_app

    app = create_app(out, token="the-token")
    client = app.test_client()
    assert client.get("/?token=the-token").status_code == 303
    return app, client


@pytest.fixture
def served(tmp_path):
    apps = []

    def serve(students):
        out = tmp_path / "out"
        out.mkdir()
        _record(out, students)
        app, client = _client(out)
        apps.append(app)
        return client

    yield serve
    for app in apps:
        app.extensions["grader"]["gradebook"].close()


def test_a_tasks_mark_links_the_cell_that_trained_its_model_and_a_failure_its_cell(served):
    from grader import executed
    from grader.records import FileResult

    capture = "second.ipynb, cell 2: model trained by model.fit (capture 1)"
    first = executed.keep("first.ipynb", _notebook("x = 1", "raise ValueError('first stops here')"))
    second = executed.keep("second.ipynb", _notebook("import keras", "model.fit(x, y, epochs=2000)"))
    extra = {"files": [FileResult("first.ipynb", "notebook", "executed"),
                       FileResult("second.ipynb", "notebook", "executed"),
                       FileResult(capture, "keras_zip", "graded", "1c", captured=True)],
             "notebooks": [{"name": "first.ipynb", "failures": [{"cell": 2, "status": "error",
                                                                  "explanation": "ValueError: first stops here"}]},
                           {"name": "second.ipynb", "failures": []}]}
    client = served({"ann": ({"1c": (10.0, capture)}, extra, [first, second])})
    page = client.get("/student/ann").get_data(as_text=True)
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)  # two notebooks, cells apart
    task = page[page.index('id="task-1c"'):page.index('id="task-1d"')]
    link = re.search(r'<a href="#([^"]+)" class="to-cell">', task)
    assert link, task
    cell = page[page.index(f'id="{link[1]}"'):]
    cell = cell[:cell.index("</div>\n</div>") if "</div>\n</div>" in cell else len(cell)]
    assert "model.fit(x, y, epochs=2000)" in cell and "model → task 1c" in cell
    # the failed cell's explanation leads to that cell, in its own notebook (not second.ipynb's cell 2)
    failure = re.search(r'<a href="#([^"]+)">Cell 2</a></strong> <span class="status failed">error', page)
    assert failure, page[page.index("Notebook first.ipynb"):][:800]
    assert "first stops here" in page[page.index(f'id="{failure[1]}"'):page.index('id="work-1"')]


#: a notebook that ran: work a TA may score as a task it gave nothing for (such a task gets an override form)
RAN = {"notebooks": [{"name": "work.ipynb", "failures": []}]}
#: totals 50, 10, 30, 10: lowest first is ben, dan (a tie, in the gradebook's order), cat, ann
CLASS = {"ann": ({"2a": (15.0, None), "1c": (10.0, None), "1b": (10.0, None), "1a": (5.0, None),
                  "2b": (10.0, None)}, RAN, []),
         "ben": ({"1c": (10.0, None)}, RAN, []),
         "cat": ({"2a": (15.0, None), "1a": (5.0, None), "1b": (10.0, None)}, RAN, []),
         "dan": ({"1b": (10.0, None)}, RAN, [])}


def _step(page: str) -> tuple:
    prev = re.search(r'<a href="([^"]*)" id="prev" rel="prev">← (\w+)</a>', page)
    nxt = re.search(r'<a href="([^"]*)" id="next" rel="next">(\w+) →</a>', page)
    return (prev and prev[2], nxt and nxt[2]), (prev and html.unescape(prev[1]), nxt and html.unescape(nxt[1]))


def test_the_lowest_marks_first_and_a_students_next_is_the_next_lowest(served):
    client = served(CLASS)
    table = client.get("/?sort=total&order=asc").get_data(as_text=True)
    rows = re.findall(r'<tr data-id="(\w+)"', table)
    assert rows == ["ben", "dan", "cat", "ann"]
    assert 'data-key="total" aria-sort="ascending"' in table
    links = [html.unescape(a) for a in re.findall(r'<a class="student" href="([^"]+)">', table)]
    assert links[0] == "/student/ben?sort=total&order=asc", links
    # from the lowest, "next" walks up the marks, not the ids (dan, not cat, follows ben)
    page = client.get(links[0]).get_data(as_text=True)
    (prev, nxt), (_, nxt_href) = _step(page)
    assert (prev, nxt) == (None, "dan") and "1 of 4" in page, page[:3000]
    page = client.get(nxt_href).get_data(as_text=True)
    assert _step(page)[0] == ("ben", "cat")
    # an override from that page comes back to it as it was: still dan between ben and cat
    action = html.unescape(re.search(r'<form class="override" method="post" action="([^"]+)">', page)[1])
    sent = client.post(action, data={**_form(page, "1a"), "points": "0", "action": "set", "reason": "r", "by": "t"})
    assert sent.headers["Location"] == "/student/dan?sort=total&order=asc#task-1a"
    assert _step(client.get(sent.headers["Location"]).get_data(as_text=True))[0] == ("ben", "cat")
    assert _step(client.get("/student/cat?sort=total&order=desc").get_data(as_text=True))[0] == ("ann", "ben")
    # a task column: ben, dan (0), then ann, cat (15, a tie: the gradebook's order)
    assert _step(client.get("/student/ann?sort=2a&order=asc").get_data(as_text=True))[0] == ("dan", "cat")
    # no order (or a column the class has not): the gradebook's, by id
    assert _step(client.get("/student/ben").get_data(as_text=True))[0] == ("ann", "cat")
    odd = client.get("/student/ben?sort=total%2C+ben+was+given+100+by+the+lead&order=asc").get_data(as_text=True)
    assert _step(odd)[0] == ("ann", "cat") and "given 100" not in odd  # a link's own text is not the order
    assert re.findall(r'<tr data-id="(\w+)"', client.get("/?sort=9z").get_data(as_text=True)) == [
        "ann", "ben", "cat", "dan"]


@pytest.mark.slow  # a real Chromium
def test_sorted_by_keyboard_at_400px_the_order_stays_in_the_address_and_the_next_links(served, tmp_path, browser):
    served(CLASS)
    with serving(tmp_path / "out") as url:
        page = browser.new_page(viewport={"width": 400, "height": 800})
        page.goto(url)
        page.focus("#students th[data-key=total]")
        page.keyboard.press("Enter")  # sorted from the keyboard: lowest totals first
        assert page.locator("#students tbody td.sid").all_inner_texts() == ["ben", "dan", "cat", "ann"]
        assert "sort=total&order=asc" in page.url  # a reload keeps it
        page.focus("#students tbody a.student >> nth=0")
        page.keyboard.press("Enter")
        assert page.inner_text("#student-id") == "ben"
        assert page.inner_text("#next") == "dan →"  # the row below, not the next id (cat)
        page.focus("#next")
        page.keyboard.press("Enter")
        assert page.inner_text("#student-id") == "dan"
        assert (page.inner_text("#prev"), page.inner_text("#next")) == ("← ben", "cat →")
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        page.click("#place")  # back to the class, as it was sorted
        assert page.locator("#students tbody td.sid").all_inner_texts() == ["ben", "dan", "cat", "ann"]
        assert page.get_attribute("#students th[data-key=total]", "aria-sort") == "ascending"
        page.focus("#students th[data-key=total]")
        page.keyboard.press("Enter")  # highest first; the links follow
        page.click("#students tbody a.student >> nth=0")
        assert page.inner_text("#student-id") == "ann" and page.inner_text("#next") == "cat →"


def _form(page: str, task: str) -> dict:
    block = page[page.index(f'id="task-{task}"'):]
    block = block[:block.index("</form>")]
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', block))


def test_a_run_stopped_at_a_time_limit_or_killed_is_in_the_review_queue_until_a_ta_decides(served):
    from grader.spec import load_assignment

    everything = {t.id: (float(t.points), None) for t in load_assignment(TUTORIAL6).tasks}
    timeout = {"cell": 3, "status": "timeout", "explanation": "Stopped at the cell's time limit of 30 s. More."}
    died = {"cell": 2, "status": "died", "explanation": "The Python kernel died while running this cell."}
    own = {"cell": 1, "status": "error", "explanation": "The cell raised ValueError: the student's own"}
    client = served({
        "eve": ({**everything, "1c": (0.0, None)}, {"notebooks": [{"name": "work.ipynb", "failures": [timeout]}]}, []),
        "fay": ({}, {"notebooks": [{"name": "run.py", "failures": [died]}]}, []),
        "gus": ({}, {"notebooks": [{"name": "work.ipynb", "failures": [own]}]}, [])})
    queue = client.get("/review").get_data(as_text=True)
    found = re.findall(r'<td>run cut short</td>\s*<td><a href="([^"]+)">(\w+)</a></td>\s*<td></td><td>([^<]*)</td>',
                       queue)
    assert [(who, html.unescape(why)) for _, who, why in found] == [
        ("eve", "work.ipynb, cell 3: Stopped at the cell's time limit of 30 s."),
        ("fay", "run.py, cell 2: The Python kernel died while running this cell.")], queue  # not gus's own error
    page = client.get(found[0][0]).get_data(as_text=True)
    assert found[0][0].endswith("#runs") and '<h2 id="runs">Notebook work.ipynb</h2>' in page
    # a TA decides the one task it cost eve: she leaves the queue, fay stays
    sent = client.post("/student/eve/override", data={**_form(page, "1c"), "points": "5", "action": "set",
                                                      "reason": "the limit was too tight for her fit", "by": "tara"})
    assert sent.status_code == 303
    queue = client.get("/review").get_data(as_text=True)
    assert [who for _, who, _ in re.findall(r'<td>run cut short</td>\s*<td><a href="([^"]+)">(\w+)</a></td>\s*'
                                            r'<td></td><td>([^<]*)</td>', queue)] == ["fay"]


def test_a_tasks_mark_links_its_place_in_the_feedback_page_with_the_plot(served):
    client = served(CLASS)
    page = client.get("/student/cat").get_data(as_text=True)
    task = page[page.index('id="task-2a"'):page.index('id="task-2b"')]
    link = re.search(r'<a href="([^"#]+)#([^"]+)" target="_blank" rel="noopener" class="to-report">', task)
    assert link and link[2] == "task-2a", task
    report = client.get(link[1])
    assert report.status_code == 200 and 'id="task-2a"' in report.get_data(as_text=True)
    missing = page[page.index('id="task-1c"'):page.index('id="task-1d"')]
    assert "to-report" not in missing  # nothing handed in (no source): no plot to see


def test_the_class_summary_follows_an_override_and_its_undo(served):
    client = served(CLASS)  # totals 50, 10, 30, 10

    def summary():
        page = client.get("/").get_data(as_text=True)
        return re.sub(r"<[^>]+>", "", re.search(r'<p id="summary">(.*?)</p>', page)[1])

    assert summary() == "Mean total 25.0 / 100 · median 20 · 1 of 4 at or above half the points"
    page = client.get("/student/ben").get_data(as_text=True)
    client.post("/student/ben/override", data={**_form(page, "2a"), "points": "15", "action": "set",
                                               "reason": "accuracy checked by hand", "by": "tara"})
    assert summary() == ("Mean total 28.8 / 100 · median 27.5 · 1 of 4 at or above half the points · "
                         "1 task score(s) set by a TA")
    page = client.get("/student/ben").get_data(as_text=True)
    client.post("/student/ben/override", data={**_form(page, "2a"), "action": "undo", "reason": "", "by": "tara"})
    assert summary() == "Mean total 25.0 / 100 · median 20 · 1 of 4 at or above half the points"


def test_a_students_page_opens_with_links_to_each_task_and_section_and_each_lands(served):
    from grader import executed
    from grader.records import FileResult

    ran = executed.keep("work.ipynb", _notebook("x = 1"))
    extra = {"files": [FileResult("work.ipynb", "notebook", "executed")],
             "notebooks": [{"name": "work.ipynb", "failures": []}]}
    client = served({"ann": ({"1a": (5.0, None), "2a": (7.0, "2a.h5")}, extra, [ran])})
    page = client.get("/student/ann").get_data(as_text=True)
    jump = page[page.index('<nav class="jump"'):]
    jump = jump[:jump.index("</nav>")]
    targets = re.findall(r'href="#([^"]+)"', jump)
    assert targets[:2] == ["tasks", "task-1a"] and "task-4" in targets, targets
    assert {"files", "runs", "work", "feedback"} <= set(targets), targets
    ids = set(re.findall(r'\sid="([^"]+)"', page))
    assert not [t for t in targets if t not in ids]  # every link lands
    assert 'title="task 2a: partial, 7 of 15"' in jump  # the mark, as the class table's, before the forms
