"""grader serve as a TA reviews a class with it, round 2: previous and next among the students the search found,
override forms folded until asked for (and none where there is nothing to score), an undo one click away, the
page back at the task with the focus on what was done, refusals as pages of the app, no override posted from a
page of another origin, credit earned by re-training in the review queue, and every step by keyboard alone.

One class (recorded through ``Gradebook.record``, its pages drawn by ``render_reports``) served once by
``grader serve`` for the whole module; the browser tests drive it in Chromium, the others through Flask's test
client over the same gradebook.  Tests touch different students, so their overrides do not meet."""
from __future__ import annotations

import contextlib
import html
import http.server
import re
import threading

import pytest

from conftest import TUTORIAL6
from test_serve_browser import audit, browser, serving  # noqa: F401 (Chromium, a fixture; grader serve running)

pytest.importorskip("flask")

#: 2b's thresholds (accuracy, as the spec's calibration writes them into a result)
THRESHOLD = {"metric": "accuracy", "pass": 0.95, "partial": 0.75, "higher_is_better": True, "source": "test"}


def _record(out):
    """Two batches.  The first: amy, ben, cal, dee, eve (the gradebook's order).  ben: every file graded (1c),
    the rest missing with nothing to score; cal: a write-up the grader does not grade beside 1c; dee: 2b's own
    run short of the partial-credit threshold, its recipe re-trained by the grader over it; eve: 1a at 1 of 5,
    which a TA then sets to 4.  The second batch grades eve's changed work again (1a: 2): the TA's 4 stands,
    flagged; the others are unchanged."""
    from grader.pipeline import render_reports
    from grader.spec import load_assignment
    from grader.store import Gradebook

    assignment = load_assignment(TUTORIAL6)
    book = Gradebook(None, out)
    _batch(book, assignment, {"amy": {"1a": 5.0, "1c": 10.0, "2b": 10.0}, "ben": {"1c": 10.0},
                              "cal": {"1c": 10.0}, "dee": {"1c": 10.0, "2b": 5.0}, "eve": {"1a": 1.0}})
    book.override(assignment.id, "eve", "1a", 4.0, reason="the plot shows the fit", by="tara")
    _batch(book, assignment, {"eve": {"1a": 2.0}})
    book.close()
    render_reports(TUTORIAL6, out)


def _batch(book, assignment, scores):
    """One `grader grade` of ``scores`` ({student: {task: points}}; other tasks missing) into ``book``."""
    from grader.records import FileResult, Measurements, StudentResult, TaskResult

    run = book.begin_run(assignment, "test")
    for sid, got in scores.items():
        tasks, files = [], []
        for t in assignment.tasks:
            score = got.get(t.id)
            if score is None:
                tasks.append(TaskResult(t.id, t.title, 0.0, t.points, "missing", {}, f"No model for task {t.id}.",
                                        optional=t.optional))
                continue
            status = "passed" if score == t.points else "partial"
            metrics, threshold, message = {}, None, f"{sid}: {t.id} scored {score:g}."
            if sid == "dee" and t.id == "2b":
                metrics = {"accuracy": 0.70, "retrained_accuracy": 0.80, "retrainings": 3.0}
                threshold = THRESHOLD
                message = ("The held-out accuracy is 0.700, below the partial-credit threshold (≥ 0.750). Your "
                           "recipe, re-trained by the grader 3 times with fresh seeds, reached an accuracy of "
                           "0.800: partial credit for your recipe.")
            tasks.append(TaskResult(t.id, t.title, score, t.points, status, metrics, message, source=f"{t.id}.h5",
                                    optional=t.optional, threshold=threshold))
            files.append(FileResult(f"{t.id}.h5", "hdf5", "graded", t.id))
        if sid == "cal":
            files.append(FileResult("answers.pdf", "other", "ignored", None, "not a file the grader grades"))
        result = StudentResult(sid, sum(t.score for t in tasks), assignment.max_score, tasks, files=files)
        key = f"{sid}-{run}"
        book.record(assignment.id, run, sid, content_hash=key, files=[], measure_key=key, score_key=key,
                    measurements=Measurements(sid, [], [], [], {}, []).to_json(), result=result)
    book.finish_run(run, "finished", {})


@pytest.fixture(scope="module")
def klass(tmp_path_factory):
    """The class served by `grader serve --by tara`: (output folder, the URL it printed)."""
    out = tmp_path_factory.mktemp("ta2") / "out"
    out.mkdir()
    _record(out)
    with serving(out, "--by", "tara") as url:
        yield out, url


@pytest.fixture
def client(klass):
    """Flask's test client over the same gradebook, signed in."""
    from grader.serve.app import create_app

    app = create_app(klass[0], token="the-token")
    client = app.test_client()
    assert client.get("/?token=the-token").status_code == 303
    yield client
    app.extensions["grader"]["gradebook"].close()


def _task(page: str, task: str) -> str:
    start = page.index(f'id="task-{task}"')
    return page[start:page.index("</section>", start)]


def _focused(page) -> dict:
    return page.evaluate("(() => { const e = document.activeElement, s = getComputedStyle(e); return {tag: "
                         "e.tagName, id: e.id, name: e.getAttribute('name'), value: e.getAttribute('value'), "
                         "text: (e.textContent || '').trim().slice(0, 80), cls: e.className, outline: "
                         "s.outlineStyle + ' ' + s.outlineWidth}; })()")


def _tab_to(page, selector: str, limit: int = 120) -> list[dict]:
    """Press Tab until the element ``selector`` names has the focus: every element passed on the way."""
    passed = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        passed.append(_focused(page))
        if page.evaluate("s => document.activeElement === document.querySelector(s)", selector):
            return passed
    raise AssertionError(f"{selector} not reached by Tab: {passed[-10:]}")


@pytest.mark.slow  # a real Chromium
def test_by_keyboard_a_ta_searches_walks_the_found_students_overrides_and_undoes(browser, klass):
    out, url = klass
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(url)
    passed = _tab_to(page, "#search")
    page.keyboard.type("e")  # ben, dee, eve
    assert page.locator("#students tbody tr:visible td.sid").all_inner_texts() == ["ben", "dee", "eve"]
    assert "q=e" in page.url  # a reload keeps the search
    passed += _tab_to(page, "#students tbody tr:not([hidden]) a.student")  # the first shown: ben
    assert page.evaluate("document.activeElement.textContent") == "ben"
    page.keyboard.press("Enter")
    page.locator("#student-id", has_text="ben").wait_for()
    # next is the next student found, not the next in the class (cal)
    assert (page.locator("#prev").count(), page.inner_text("#next")) == (0, "dee →")
    assert page.inner_text("#place") == "1 of 3 found by the search “e”"
    passed += _tab_to(page, "#next")
    page.keyboard.press("Enter")
    page.locator("#student-id", has_text="dee").wait_for()
    assert (page.inner_text("#prev"), page.inner_text("#next")) == ("← ben", "eve →")
    # the forms are folded: a button (summary) opens one, the focus goes to its points, selected
    assert page.locator("form.override:visible").count() == 0
    passed += _tab_to(page, "#override-2b summary")
    page.keyboard.press("Enter")
    page.wait_for_function("document.activeElement.name === 'points'")  # the toggle event comes after the key
    page.keyboard.type("9")
    page.keyboard.press("Tab")
    page.keyboard.type("re-trained recipe checked: it is the sheet's network")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    said = page.locator("#task-2b .flash.ok")
    said.wait_for()
    page.wait_for_load_state()
    # back on dee, at the task, among the found students still; what was done has the focus, on screen
    assert page.url.endswith("/student/dee?q=e#task-2b"), page.url
    assert "Task 2b: set to 9 of 10" in said.inner_text()
    assert _focused(page)["cls"] == "flash ok"
    box = said.bounding_box()
    assert box and 0 <= box["y"] and box["y"] + box["height"] <= 900, box
    assert (page.inner_text("#prev"), page.inner_text("#next")) == ("← ben", "eve →")
    assert audit(out)[-1][:6] == ("dee", "2b", "set", 9.0, "re-trained recipe checked: it is the sheet's network",
                                  "tara")
    # the undo: the next stop after the message, no form to open
    passed += _tab_to(page, "#task-2b form.undo button", limit=3)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.locator("#task-2b .flash.ok").wait_for()
    assert "the override was undone; the grader's 5 of 10 stands" in page.inner_text("#task-2b .flash.ok")
    assert page.locator("#task-2b form.undo").count() == 0 and "✎" not in page.inner_text("#task-2b h3")
    assert audit(out)[-1][:3] == ("dee", "2b", "undo") and audit(out)[-1][5] == "tara"
    # where the keyboard was, it was seen: a thick ring, never the browser's thin one nor a mark's dashed one
    rings = {(p["tag"], p["outline"]) for p in passed}
    assert {outline for _, outline in rings} == {"solid 3px"}, rings


@pytest.mark.slow  # a real Chromium
def test_at_400px_a_missing_task_has_a_form_only_when_there_is_work_to_score(browser, klass):
    out, url = klass
    page = browser.new_page(viewport={"width": 400, "height": 800})
    page.goto(url)
    base = page.url.split("?")[0]
    page.goto(base + "student/ben")
    # every file of ben's became a task: a missing task has nothing to score, so no form, and says why
    assert page.locator("#task-1a details, #task-1a form").count() == 0
    assert "every file became another task, so nothing is left to score as 1a" in page.inner_text("#task-1a")
    assert page.locator("#task-1c summary").is_visible() and not page.locator("#task-1c form").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    # every field has a label, headings go down one level at a time
    unlabelled = page.evaluate("Array.from(document.querySelectorAll('input:not([type=hidden]), select, "
                               "textarea')).filter(e => !e.labels.length && !e.getAttribute('aria-label'))"
                               ".map(e => e.name)")
    assert unlabelled == []
    levels = page.evaluate("Array.from(document.querySelectorAll('h1,h2,h3,h4')).map(h => +h.tagName[1])")
    assert levels[0] == 1 and all(b - a <= 1 for a, b in zip(levels, levels[1:])), levels
    page.goto(base + "student/cal")  # a write-up the grader does not grade: a TA may score it as a task
    page.click("#override-1a summary")
    form = page.locator("#task-1a form.override")
    assert form.is_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    form.locator("input[name=reason]").fill("   ")  # blank: the browser lets it through, the server does not
    with page.expect_navigation():
        form.locator("button[value=set]").click()
    refused = page.locator("#task-1a .flash.refused")
    refused.wait_for()
    assert "Give a reason" in refused.inner_text()
    assert page.locator("#task-1a form.override").is_visible()  # still open, to be put right
    assert 0 <= refused.bounding_box()["y"] < 800
    assert [r for r in audit(out) if r[0] == "cal"] == []


def test_previous_next_and_the_override_keep_the_search_and_the_order(client):
    page = client.get("/student/dee?q=E&sort=total&order=asc").get_data(as_text=True)
    # found by "E" (any case): ben 10, dee 15 and eve 4; lowest total first: eve, ben, dee
    assert re.search(r'id="prev" rel="prev">← ben</a>', page) and 'id="next"' not in page
    assert "3 of 3 found by the search “E” sorted by total, ascending" in page
    action = re.search(r'<form class="override" method="post" action="([^"]+)">', page)[1].replace("&amp;", "&")
    assert action == "/student/dee/override?sort=total&order=asc&q=E"
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', _task(page, "1c")))
    sent = client.post(action, data={**hidden, "points": "10", "reason": "kept", "by": "tara", "action": "set"})
    assert sent.headers["Location"] == "/student/dee?sort=total&order=asc&q=E#task-1c"
    # a student the search does not find (a link from elsewhere): among the whole class
    page = client.get("/student/cal?q=e").get_data(as_text=True)
    assert "← ben" in page and "dee →" in page and "3 of 5 in the class table" in page
    table = client.get("/?q=e").get_data(as_text=True)  # the others are in the table, hidden (a search cleared)
    rows = re.findall(r'<tr data-id="(\w+)" data-at="\d+"( hidden)?>', table)
    assert rows == [("amy", " hidden"), ("ben", ""), ("cal", " hidden"), ("dee", ""), ("eve", "")]
    assert "/student/ben?q=e" in table and ">3 shown<" in table


def test_an_undo_is_there_without_opening_a_form_and_needs_no_reason(client, klass):
    page = client.get("/student/amy").get_data(as_text=True)
    block = _task(page, "1c")
    assert "<details" in block and " open" not in block.split("<summary>")[0]  # folded
    assert 'class="undo"' not in block  # nothing to undo yet
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', block))
    client.post("/student/amy/override", data={**hidden, "points": "4", "reason": "copied", "action": "set"})
    block = _task(client.get("/student/amy").get_data(as_text=True), "1c")
    undo = block[block.index('<form class="undo"'):]
    undo = undo[:undo.index("</form>")]
    assert "<details" not in block[:block.index('<form class="undo"')]  # before the folded form, not in it
    assert "the grader's own score, 10 of 10, stands again" in undo
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', undo))
    assert set(hidden) == {"csrf", "task", "version", "by"}
    done = client.post("/student/amy/override", data={**hidden, "action": "undo"})
    assert done.headers["Location"].endswith("/student/amy#task-1c")
    assert "the override was undone" in _task(client.get(done.headers["Location"]).get_data(as_text=True), "1c")
    assert [r[2] for r in audit(klass[0]) if r[:2] == ("amy", "1c")] == ["set", "undo"]


def test_a_refused_request_is_a_page_of_the_app_that_names_nothing_of_the_class(client, klass):
    from grader.serve.app import create_app

    stranger = create_app(klass[0], token="the-token").test_client()
    refused = stranger.get("/student/amy")  # no token
    page = refused.get_data(as_text=True)
    assert refused.status_code == 403 and refused.mimetype == "text/html"
    assert '<h1 id="error">Forbidden</h1>' in page and "open the URL it printed" in page
    assert not any(name in page for name in ("amy", "tutorial6", "Back to the class"))
    # a form from before the server was restarted (another CSRF token): the TA is told, with a way back
    refused = client.post("/student/amy/override", data={"csrf": "stale", "task": "1a", "points": "1",
                                                         "reason": "r", "action": "set"})
    page = refused.get_data(as_text=True)
    assert refused.status_code == 403 and "CSRF token is missing or wrong" in page and "Back to the class" in page
    # a request under another host name (DNS rebinding): the same page, nothing of the class
    refused = client.get("/student/amy", headers={"Host": "evil.example"})
    page = refused.get_data(as_text=True)
    assert refused.status_code == 403 and "answers to" in page and "amy" not in page and "tutorial6" not in page
    assert "Open the address" in page and "Back to the class" not in page


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Another origin on the same machine (a student's page opened from a local web server): pages that post
    an override to grader serve."""
    target = ""

    def do_GET(self):
        form = (f'<form id="f" method="post" action="{self.target}/student/eve/override">'
                '<input name="task" value="1a"><input name="points" value="5"><input name="reason" value="pwned">'
                '<input name="action" value="set"><input name="csrf" value=""></form>')
        if self.path == "/form":
            body = form + '<script>document.getElementById("f").submit()</script>'
        else:  # a script's request, with the TA's cookies
            body = ('<script>const b = new URLSearchParams({task: "1a", points: "5", reason: "pwned", action: "set"});'
                    f'fetch("{self.target}/student/eve/override", {{method: "POST", mode: "no-cors", '
                    'credentials: "include", body: b}).then(() => document.title = "sent", '
                    '() => document.title = "failed");</script>')
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _attacker(target: str):
    handler = type("Handler", (_Attacker,), {"target": target})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow  # a real Chromium
def test_a_page_of_another_origin_cannot_post_an_override(browser, klass):
    """The TA signed in, in the same browser: a page served from another port of 127.0.0.1 (the same site, so
    the SameSite cookie goes with its requests) posts a form, and a script, to the server.  Both refused."""
    out, url = klass
    before = audit(out)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)  # signed in
        base = page.url.split("?")[0].rstrip("/")
        with _attacker(base) as evil:
            page.goto(evil + "/form")
            page.wait_for_url(lambda u: u.startswith(base))  # the form's answer: the server's page
            page.wait_for_load_state()
            assert page.locator("#error").count() == 1 and page.inner_text("#error") == "Forbidden", page.url
            page.goto(evil + "/fetch")
            page.wait_for_function("document.title === 'sent' || document.title === 'failed'")
        assert audit(out) == before
        page.goto(base + "/student/eve")  # the TA's own page still works
        assert page.inner_text("#student-id") == "eve"
    finally:
        context.close()


def test_credit_earned_by_re_training_is_in_the_review_queue(client, klass):
    from grader.api import review_gradebook

    page = client.get("/review").get_data(as_text=True)
    row = re.search(r'<tr class="note"><td>re-trained credit</td>\s*<td><a href="([^"]+)">dee</a></td>\s*'
                    r'<td>2b</td><td>([^<]*)</td>', page)
    assert row, page
    assert row[1] == "/student/dee#task-2b"
    assert "own run: accuracy 0.700, short of the partial threshold (≥ 0.750)" in row[2].replace("&amp;", "&")
    assert "re-training of the recipe reached 0.800: graded partial, 5 of 10" in row[2]
    found = review_gradebook(klass[0])["items"]
    assert [(i["kind"], i["students"], i["task"]) for i in found if i["kind"] == "re-trained credit"] == [
        ("re-trained credit", ["dee"], "2b")]


def test_the_review_page_says_what_the_last_batch_changed(client):
    page = client.get("/review").get_data(as_text=True)
    changed = page[page.index('<h2 id="changed">'):]
    assert "graded 1 of 5 student(s) again" in changed
    listed = re.findall(r'<li data-id="\w+"><a href="([^"]+)">(\w+)</a>: <span class="was-now">([^<]*)</span>',
                        changed)
    assert listed == [("/student/eve", "eve", "was 4, now 4 / 100 (the grader's own: was 1, now 2)")], listed
    assert "✎! a TA's score to look at again: 1a" in changed
    # and the queue has it first among the checks: the TA's 4 over the grader's 1, which is now 2
    assert re.search(r'<td>override needs review</td>\s*<td><a href="/student/eve#task-1a">eve</a>', page)


def test_a_tasks_evidence_is_its_metric_its_thresholds_and_where_from_and_the_re_training(client):
    page = client.get("/student/dee").get_data(as_text=True)
    block = _task(page, "2b").split('<ul class="evidence"', 1)[1].split("</ul>")[0]
    evidence = [html.unescape(e) for e in re.findall(r"<li>([^<]*)</li>", block)]
    assert evidence == ["held-out accuracy: 0.700", "thresholds: pass ≥ 0.950, partial ≥ 0.750 (from test)",
                        "the grader's re-training of the recipe: best 0.800 of 3 run(s)"]
    assert '<ul class="evidence"' not in _task(page, "1a")  # missing: nothing measured


def test_a_students_page_opens_with_what_the_review_queue_lists_of_theirs(client):
    page = client.get("/student/dee").get_data(as_text=True)
    said = page[page.index('<section id="attention"'):page.index("</section>", page.index('<section id="attention"'))]
    assert "<h2>Needs a look</h2>" in said and "<strong>re-trained credit</strong>" in said
    assert '<a href="#task-2b">task 2b</a>: the student&#39;s own run: accuracy 0.700' in said
    eve = client.get("/student/eve").get_data(as_text=True)
    assert '<strong>override needs review</strong> · <a href="#task-1a">task 1a</a>' in eve
    assert 'id="attention"' not in client.get("/student/ben").get_data(as_text=True)  # nothing to look at
