"""grader serve without a browser: the token, CSRF, escaping, concurrent TAs, and the executed notebook kept.

A real gradebook (SQLite) holding a small class recorded through ``Gradebook.record``, real pages
(``render_reports``), the real Flask app through its test client."""
from __future__ import annotations

import base64
import csv
import io
import random
import re
import sqlite3

import nbformat
import pytest

import test_postgres
from conftest import TUTORIAL6
from test_postgres import postgres  # noqa: F401 (the throw-away server, a fixture)

pytest.importorskip("flask")

HOSTILE = '<img src=x onerror="alert(1)">\u202eevil'


def _png(size=(8, 6), text_chunk=False) -> bytes:
    from PIL import Image, PngImagePlugin

    out = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    if text_chunk:
        info.add_text("Comment", "<script>alert(1)</script>")
    Image.new("RGB", size, (200, 10, 10)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _hostile_notebook():
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print('<script>alert(1)</script>')\ndisplay(HTML('<b id=pwn>x</b>'))")
    code.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="\x1b[31m<script>alert(1)</script>\x1b[0m\n"),
        nbformat.v4.new_output("display_data", data={"text/html": "<b id=pwn>x</b>",
                                                     "application/javascript": "alert(1)"}),
        nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(_png(text_chunk=True)).decode(),
                                                     "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(b"<svg onload=alert(1)>").decode()}),
        nbformat.v4.new_output("error", ename="ValueError", evalue="bad",
                               traceback=["\x1b[0;31mValueError\x1b[0m: <bad>"]),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# <h1 id=md>title</h1>"), code]
    return nb


@pytest.fixture
def small_class(tmp_path):
    """A class of two (alice; a student whose id is hostile HTML) in a real gradebook, with its pages."""
    from grader.pipeline import render_reports
    from grader.store import Gradebook

    out = tmp_path / "out"
    out.mkdir()
    record_class(Gradebook(None, out))
    render_reports(TUTORIAL6, out)
    from grader.api import export_gradebook

    export_gradebook(out, formats=["csv"])
    return out


def record_class(book):
    """Record alice and the hostile student in ``book`` (any database), then close it."""
    from grader import executed
    from grader.records import Measurements, StudentResult, TaskResult
    from grader.spec import load_assignment

    assignment = load_assignment(TUTORIAL6)
    run = book.begin_run(assignment, "test")
    kept = executed.keep("work.ipynb", _hostile_notebook())
    for i, sid in enumerate(["alice", HOSTILE]):
        tasks = [TaskResult(t.id, t.title, 0.0, t.points, "failed", {}, f"{sid} did not pass {t.id}.",
                            optional=t.optional) for t in assignment.tasks]
        result = StudentResult(sid, 0.0, assignment.max_score, tasks, notebooks=[{"name": "work.ipynb"}])
        measured = Measurements(sid, [], [], [], {}, [])
        measured.executed = [kept]
        book.record(assignment.id, run, sid, content_hash=f"h{i}", files=[], measure_key=f"m{i}",
                    score_key=f"s{i}", measurements=measured.to_json(), result=result)
    book.finish_run(run, "finished", {})
    book.close()


@pytest.fixture
def app(small_class):
    from grader.serve.app import create_app

    app = create_app(small_class, token="the-token")
    yield app
    app.extensions["grader"]["gradebook"].close()


def signed_in(app):
    client = app.test_client()
    response = client.get("/?token=the-token")
    assert response.status_code == 303 and "token" not in response.headers["Location"]
    return client


def form_of(page: str, task: str) -> dict:
    """The override form of ``task`` on a student's page, its hidden fields filled in as the page drew them."""
    block = page[page.index(f'id="task-{task}"'):]
    block = block[:block.index("</form>")]
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', block))


def override_rows(out):
    c = sqlite3.connect(out / "gradebook.sqlite")
    try:
        return c.execute("select task_id, action, points, reason, by from overrides order by id").fetchall()
    finally:
        c.close()


def test_every_request_without_the_right_token_is_refused(app):
    client = app.test_client()
    for path in ("/", "/review", "/student/alice", "/report/alice", "/?token=wrong", "/?token=",
                 "/student/nobody", "/nowhere", "/student/alice/override"):  # no page says what exists
        response = client.get(path)
        assert response.status_code == 403, path
        assert b"alice" not in response.data
    client.set_cookie("grader_token_x", "the-token")  # a cookie of another name carries nothing
    assert client.get("/").status_code == 403
    signed = signed_in(app)  # the token once in the URL, then the cookie it set
    page = signed.get("/")
    assert page.status_code == 200 and b"alice" in page.data
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "same-origin"


def test_the_class_is_searched_and_serve_without_a_gradebook_says_so(app, tmp_path):
    from click.testing import CliRunner

    from grader.cli import main

    client = signed_in(app)
    page = client.get("/?q=ALI").get_data(as_text=True)  # without script: the server hides the others' rows
    rows = re.findall(r'<tr data-id="[^"]*" data-at="\d+"( hidden)?><td class="sid" data-value="([^"]*)"', page)
    assert sorted(rows) == [("", "alice"), (" hidden", "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;\\u202eevil")]
    assert "1 shown" in page
    done = CliRunner().invoke(main, ["serve", "-o", str(tmp_path / "nothing")])
    assert done.exit_code == 2 and "no gradebook" in done.output


def test_a_post_without_the_csrf_token_is_refused(app, small_class):
    client = signed_in(app)
    fields = form_of(client.get("/student/alice").get_data(as_text=True), "1a")
    assert fields["csrf"]
    base = {"task": "1a", "points": "3", "reason": "looked at it", "action": "set", "version": fields["version"]}
    assert client.post("/student/alice/override", data=base).status_code == 403
    assert client.post("/student/alice/override", data={**base, "csrf": "forged"}).status_code == 403
    other_site = client.post("/student/alice/override", data={**base, "csrf": fields["csrf"]},
                             headers={"Origin": "http://evil.example"})
    assert other_site.status_code == 403
    assert override_rows(small_class) == []
    done = client.post("/student/alice/override", data={**base, "csrf": fields["csrf"]})
    assert done.status_code == 303
    from grader.api import os_user

    assert override_rows(small_class) == [("1a", "set", 3.0, "looked at it", os_user())]  # by: the OS user, as the CLI


def test_an_override_from_the_page_is_grader_overrides_row_and_refreshes_pages_and_exports(app, small_class):
    client = signed_in(app)
    fields = form_of(client.get("/student/alice").get_data(as_text=True), "1c")
    done = client.post("/student/alice/override", data={**fields, "points": "7.5", "reason": "right model, misnamed",
                                                        "by": "tara", "action": "set"}, follow_redirects=True)
    page = done.get_data(as_text=True)
    assert "Task 1c: set to 7.5 of" in page and "✎ set by tara" in page
    assert override_rows(small_class) == [("1c", "set", 7.5, "right model, misnamed", "tara")]
    assert "right model, misnamed" in (small_class / "students" / "alice.html").read_text()
    with open(small_class / "export" / "grades.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["student_id"] == "alice")
    assert row["task_1c"] == "7.5" and "1c" in row["overridden"]
    fields = form_of(page, "1c")
    undone = client.post("/student/alice/override", data={**fields, "reason": "not hers", "by": "tara",
                                                          "action": "undo"}, follow_redirects=True)
    assert "the override was undone" in undone.get_data(as_text=True)
    assert override_rows(small_class)[-1][:2] == ("1c", "undo")
    with open(small_class / "export" / "grades.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["student_id"] == "alice")
    assert row["task_1c"] == "0" and row["overridden"] == ""


def test_a_score_without_a_reason_or_a_number_is_refused_and_the_undo_needs_none(app, small_class):
    client = signed_in(app)
    fields = form_of(client.get("/student/alice").get_data(as_text=True), "1d")
    for points, reason, said in (("5", "  ", "Give a reason"), ("five", "why", "Give the points as a number"),
                                 ("99", "too many", "worth 0 to 10 points, not 99")):
        page = client.post("/student/alice/override", data={**fields, "points": points, "reason": reason,
                                                            "action": "set"}, follow_redirects=True)
        assert said in page.get_data(as_text=True) and override_rows(small_class) == []
    client.post("/student/alice/override", data={**fields, "points": "5", "reason": "ok", "action": "set"})
    fields = form_of(client.get("/student/alice").get_data(as_text=True), "1d")
    page = client.post("/student/alice/override", data={**fields, "reason": "", "action": "undo"},
                       follow_redirects=True)
    assert "the override was undone" in page.get_data(as_text=True)
    assert [r[:2] for r in override_rows(small_class)] == [("1d", "set"), ("1d", "undo")]


def test_the_second_of_two_tas_on_the_same_task_is_told_and_changes_nothing(app, small_class):
    first, second = signed_in(app), signed_in(app)
    form_a = form_of(first.get("/student/alice").get_data(as_text=True), "2a")
    form_b = form_of(second.get("/student/alice").get_data(as_text=True), "2a")
    assert form_a["version"] == form_b["version"]
    # the message is cut to fit its cookie, not lost (a reason of random words: Flask compresses the cookie;
    # within the 2000 characters grader override takes)
    long_reason = "A decided: " + " ".join(f"{random.Random(i).getrandbits(40):x}" for i in range(170))
    assert 1200 < len(long_reason) <= 2000
    first.post("/student/alice/override", data={**form_a, "points": "10", "reason": long_reason, "by": "ann",
                                                "action": "set"})
    refused = second.post("/student/alice/override", data={**form_b, "points": "2", "reason": "B decided",
                                                           "by": "ben", "action": "set"})
    # the message rides in a cookie: a browser drops one above 4096 bytes
    assert all(len(c) < 4096 for c in refused.headers.getlist("Set-Cookie"))
    text = second.get(refused.headers["Location"]).get_data(as_text=True)
    assert "Another TA changed this task since you opened the page" in text and "ann set it to 10" in text
    assert override_rows(small_class) == [("2a", "set", 10.0, long_reason, "ann")]
    # reloaded, the second TA decides on the task as it stands
    fresh = form_of(text, "2a")
    second.post("/student/alice/override", data={**fresh, "points": "2", "reason": "B, after A", "by": "ben",
                                                 "action": "set"})
    assert override_rows(small_class)[-1] == ("2a", "set", 2.0, "B, after A", "ben")


def test_a_hostile_student_id_and_work_are_shown_escaped(app):
    from grader.report import safe_name

    client = signed_in(app)
    for path in ("/", f"/student/{safe_name(HOSTILE)}", "/review"):
        page = client.get(path).get_data(as_text=True)
        assert "<img src=x" not in page and "<script>alert" not in page and "<b id=pwn>" not in page, path
        assert "\u202e" not in page, path
    page = client.get(f"/student/{safe_name(HOSTILE)}").get_data(as_text=True)
    assert "&lt;img src=x onerror=" in page and "\\u202eevil" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the printed text, as text
    assert "[an output of application/javascript, text/html is not shown]" in page
    assert "<h1 id=md>" not in page and "&lt;h1 id=md&gt;" in page  # markdown shown as its text
    report = client.get(f"/report/{safe_name(HOSTILE)}")
    assert report.status_code == 200 and "sandbox" in report.headers["Content-Security-Policy"]


def test_a_feedback_page_that_is_a_link_is_not_served(app, small_class, tmp_path):
    client = signed_in(app)
    assert client.get("/report/alice").status_code == 200
    secret = tmp_path / "elsewhere.html"
    secret.write_text("<p>not a page of the class</p>")
    page = small_class / "students" / "alice.html"
    page.unlink()
    page.symlink_to(secret)
    assert client.get("/report/alice").status_code == 404
    assert "not a page of the class" not in client.get("/student/alice").get_data(as_text=True)


def test_the_executed_notebook_keeps_text_and_checked_png_only():
    from PIL import Image

    from grader import executed

    kept = executed.keep("work.ipynb", _hostile_notebook())
    outputs = kept["cells"][1]["outputs"]
    assert [o["kind"] for o in outputs] == ["text", "dropped", "image", "dropped", "error"]
    assert outputs[0]["text"] == "<script>alert(1)</script>\n"  # colours stripped; escaped where shown
    png = base64.b64decode(outputs[2]["png"])
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.size == (8, 6) and "Comment" not in img.info  # written again
    assert "not a valid PNG" in outputs[3]["text"]
    assert outputs[4]["text"] == "ValueError: <bad>"
    page = executed.render("<s>", [kept], title="T")
    assert "<script>alert(1)</script>" not in page and "&lt;s&gt;" in page and "<b id=pwn>" not in page


def test_a_cell_that_made_a_model_says_which_task_it_became():
    from grader import executed
    from grader.records import FileResult

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("intro"), nbformat.v4.new_code_cell("model.fit(x, y)"),
                nbformat.v4.new_code_cell("model2.fit(x, y)")]
    files = [FileResult("work.ipynb", "notebook", "executed"),
             FileResult("work.ipynb, cell 2: model trained by model.fit (capture 1)", "keras_zip", "graded", "1c",
                        captured=True),
             FileResult("work.ipynb, cell 3: model trained by model.fit (capture 2)", "keras_zip", "unmatched",
                        captured=True)]
    page = executed.render("s", [executed.keep("work.ipynb", nb)], files=files)
    cell2 = page[page.index('id="nb0-cell-2"'):page.index('id="nb0-cell-3"')]
    assert "model → task 1c" in cell2 and "model → unmatched" in page[page.index('id="nb0-cell-3"'):]


def test_the_executed_notebook_is_bounded():
    from grader import executed

    nb = nbformat.v4.new_notebook()
    big = nbformat.v4.new_code_cell("x" * (executed.MAX_SOURCE_CHARS + 50))
    big.outputs = [nbformat.v4.new_output("stream", name="stdout", text="y" * (executed.MAX_CELL_TEXT * 3))]
    nb.cells = [big] * 3 + [nbformat.v4.new_code_cell("pass")] * (executed.MAX_CELLS + 5)
    kept = executed.keep("big.ipynb", nb)
    assert len(kept["cells"]) == executed.MAX_CELLS and kept["notes"]
    first = kept["cells"][0]
    assert len(first["source"]) < executed.MAX_SOURCE_CHARS + 100
    assert sum(len(o["text"]) for o in first["outputs"]) < executed.MAX_CELL_TEXT + 200
    huge = base64.b64encode(_png(size=(3000, 2000))).decode()
    assert executed.clean_png(huge) is None  # above the pixels kept


def _race(decide) -> list:
    """Run ``decide(i)`` for i = 0, 1 on two threads released together; what each returned or raised."""
    import threading

    start, outcomes = threading.Barrier(2), [None, None]

    def one(i):
        start.wait()
        try:
            outcomes[i] = decide(i)
        except Exception as e:  # the loser's error is the result under test
            outcomes[i] = e
    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_two_tas_at_the_same_moment_one_wins_and_the_other_is_told(small_class):
    """Through ``api.override_score`` (what serve calls), truly at once: the gradebook decides."""
    from grader.api import override_score
    from grader.store import Gradebook
    from grader.store.gradebook import ChangedSince

    book = Gradebook(None, small_class)
    version = book.task_version("tutorial6", "alice", "1b")
    book.close()
    outcomes = _race(lambda i: override_score("alice", "1b", 3.0 + i, reason=f"TA {i}", by=f"ta{i}", out_dir=small_class,
                                              wait=600, expected_version=version))
    won = [o for o in outcomes if isinstance(o, dict)]
    lost = [o for o in outcomes if isinstance(o, ChangedSince)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    winner = won[0]["task"]["override"]["by"]
    assert f"{winner} set it to" in str(lost[0])
    assert [r[4] for r in override_rows(small_class)] == [winner]


@pytest.mark.slow  # starts a PostgreSQL server
@pytest.mark.skipif(test_postgres.BIN is None, reason="PostgreSQL's server is not installed (.ci/run installs it)")
def test_two_tas_at_the_same_moment_on_postgresql_one_wins(postgres):
    """The same race on PostgreSQL, on the gradebook itself (no output folder's lock): its row lock decides."""
    from grader.store import Gradebook
    from grader.store.gradebook import ChangedSince

    url = postgres.new_database("serve_race")
    record_class(Gradebook(url))
    books = [Gradebook(url), Gradebook(url)]
    try:
        version = books[0].task_version("tutorial6", "alice", "1b")
        outcomes = _race(lambda i: books[i].override("tutorial6", "alice", "1b", 3.0 + i, reason=f"TA {i}",
                                                     by=f"ta{i}", expected=version))
        won = [o for o in outcomes if isinstance(o, dict)]
        lost = [o for o in outcomes if isinstance(o, ChangedSince)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        with postgres.connect("serve_race") as c:
            assert c.execute("select count(*) from overrides").fetchone()[0] == 1
    finally:
        for book in books:
            book.close()


def test_the_class_and_student_pages_carry_the_static_pages_marks_and_legend(app):
    from grader.report import STATUSES

    client = signed_in(app)
    page = client.get("/").get_data(as_text=True)
    legend = page[page.index('id="legend"'):page.index("</ul>", page.index('id="legend"'))]
    for status, (mark, word, meaning) in STATUSES.items():
        assert f'<span class="status {status}"><span class="mark" aria-hidden="true">{mark}</span> {word}</span> ' \
               f'{meaning.replace(chr(39), "&#39;")}' in legend
    alice = page[page.index('data-id="alice"'):page.index("</tr>", page.index('data-id="alice"'))]
    # every task of alice's failed: each cell its mark, and the word for a reader that sees no colour
    failed = alice.count('data-status="failed"')
    assert failed == len(app.extensions["grader"]["gradebook"].tasks("tutorial6"))
    assert alice.count('<span class="mark" aria-hidden="true">✗</span>') == failed
    assert alice.count('<span class="sr"> failed</span>') == failed
    assert " !" not in alice
    student = client.get("/student/alice").get_data(as_text=True)
    assert 'id="legend"' in student
    assert '<span class="status failed"><span class="mark" aria-hidden="true">✗</span> failed</span>' in student


def test_by_is_the_servers_name_for_the_ta_until_one_is_typed(small_class):
    from grader.serve.app import create_app

    app = create_app(small_class, token="the-token", by="tara")
    try:
        client = signed_in(app)
        fields = form_of(client.get("/student/alice").get_data(as_text=True), "1a")
        assert 'name="by" value="tara"' in client.get("/student/alice").get_data(as_text=True)
        done = client.post("/student/alice/override", data={**fields, "points": "1", "reason": "r1", "by": "tara",
                                                            "action": "set"})
        assert not [c for c in done.headers.getlist("Set-Cookie") if c.startswith("grader_by_")]  # nothing to keep
        fields = form_of(client.get("/student/alice").get_data(as_text=True), "1b")
        client.post("/student/alice/override", data={**fields, "points": "1", "reason": "r2", "by": "ann",
                                                     "action": "set"})
        page = client.get("/student/alice").get_data(as_text=True)
        assert 'name="by" value="ann"' in page  # what this TA typed, remembered in this browser
        fields = form_of(page, "1c")
        client.post("/student/alice/override", data={**fields, "points": "1", "reason": "r3", "by": " ",
                                                     "action": "set"})  # cleared: the server's name
        assert [r[4] for r in override_rows(small_class)] == ["tara", "ann", "tara"]
        other = signed_in(app)  # another browser: the server's name
        assert 'name="by" value="tara"' in other.get("/student/alice").get_data(as_text=True)
    finally:
        app.extensions["grader"]["gradebook"].close()


def test_grader_serve_takes_by_and_says_so_in_its_help():
    from click.testing import CliRunner

    from grader.cli import main

    done = CliRunner().invoke(main, ["serve", "--help"])
    assert done.exit_code == 0 and "--by NAME" in done.output and "OS user" in done.output


def test_an_override_says_what_happened_in_the_tasks_own_section(app):
    client = signed_in(app)
    fields = form_of(client.get("/student/alice").get_data(as_text=True), "2b")
    done = client.post("/student/alice/override", data={**fields, "points": "3", "reason": "ok", "action": "set"})
    assert done.headers["Location"].endswith("#task-2b")  # the browser lands on the task ...
    page = client.get(done.headers["Location"]).get_data(as_text=True)
    section = page[page.index('id="task-2b"'):page.index("</section>", page.index('id="task-2b"'))]
    assert '<p class="flash ok" role="status" tabindex="-1">Task 2b: set to 3 of' in section  # ... and is told there
    assert page.count('class="flash') == 1


def test_a_wrong_address_or_a_form_too_long_gets_the_apps_page(app, small_class):
    client = signed_in(app)
    for path, code, says in (("/student/nobody", 404, "Not found"), ("/report/nobody", 404, "Not found"),
                             ("/student/alice/override", 405, "Not a page")):
        response = client.get(path)
        text = response.get_data(as_text=True)
        assert response.status_code == code and f'<h1 id="error">{says}</h1>' in text, path
        assert 'href="/"' in text and "Content-Security-Policy" in response.headers  # a way back; the policy
    fields = form_of(client.get("/student/alice").get_data(as_text=True), "1a")
    response = client.post("/student/alice/override", data={**fields, "points": "1", "reason": "x" * 70_000,
                                                            "action": "set"})
    assert response.status_code == 413 and "shorten the reason" in response.get_data(as_text=True)
    assert override_rows(small_class) == []


def test_a_gradebook_gone_bad_while_serving_is_told_not_a_traceback(app, small_class):
    client = signed_in(app)
    assert client.get("/").status_code == 200
    app.extensions["grader"]["gradebook"].close()
    (small_class / "gradebook.sqlite").write_bytes(b"not a database " * 1000)  # replaced under the server
    for path in ("/", "/student/alice", "/review"):
        response = client.get(path)
        text = response.get_data(as_text=True)
        assert response.status_code == 503, (path, text[:500])
        assert "The gradebook could not be read" in text and "file is not a database" in text
        assert "Traceback" not in text and 'href="/"' in text


def test_a_search_that_finds_no_one_keeps_the_columns_and_says_so(app):
    client = signed_in(app)
    page = client.get("/?q=nobody-here").get_data(as_text=True)
    head = page[page.index("<thead>"):page.index("</thead>")]
    assert all(f">{t}</th>" in head for t in ("1a", "2c", "4"))  # the tasks' columns, with no row to read them
    assert "0 shown" in page and '<p id="none" class="muted">' in page
    assert '<p id="none" class="muted" hidden>' in client.get("/").get_data(as_text=True)


def test_a_port_in_use_is_told_with_the_way_out(small_class):
    import socket

    from click.testing import CliRunner

    from grader.cli import main

    with socket.socket() as taken:  # another server already on the port
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = CliRunner().invoke(main, ["serve", "-o", str(small_class), "--port", str(port)])
    assert done.exit_code == 2, done.output
    assert f"cannot listen on 127.0.0.1:{port}" in done.output and "--port 0 takes any free one" in done.output


def test_an_override_the_grader_has_changed_since_is_flagged_as_on_the_static_page(small_class):
    from grader.records import StudentResult, TaskResult
    from grader.serve.app import create_app
    from grader.spec import load_assignment
    from grader.store import Gradebook

    assignment = load_assignment(TUTORIAL6)
    book = Gradebook(None, small_class)
    book.override("tutorial6", "alice", "1a", 4.0, reason="checked by hand", by="ann")
    run = book.begin_run(assignment, "test")  # a re-grade gives 1a partial credit of its own: look again
    tasks = [TaskResult(t.id, t.title, 2.0 if t.id == "1a" else 0.0, t.points, "partial" if t.id == "1a" else
                        "failed", {}, "graded again", optional=t.optional) for t in assignment.tasks]
    book.record(assignment.id, run, "alice", content_hash="h0", files=[], measure_key="m0", score_key="s-again",
                measurements=None, result=StudentResult("alice", 2.0, assignment.max_score, tasks))
    book.finish_run(run, "finished", {})
    book.close()
    app = create_app(small_class, token="the-token")
    try:
        client = signed_in(app)
        page = client.get("/").get_data(as_text=True)
        alice = page[page.index('data-id="alice"'):page.index("</tr>", page.index('data-id="alice"'))]
        assert alice.count("<sup>✎!</sup>") == 1 and "overridden needs-review" in alice
        assert "✎!</sup></span> the grader's own score has changed since" in page  # the legend says what it is
        student = client.get("/student/alice").get_data(as_text=True)
        task = student[student.index('id="task-1a"'):student.index("</h3>", student.index('id="task-1a"'))]
        assert "✎ set by ann; needs review: the grader's score changed since" in task
    finally:
        app.extensions["grader"]["gradebook"].close()


def test_a_students_page_leads_to_the_next_and_the_previous_student(app):
    from grader.report import safe_name

    client = signed_in(app)
    order = sorted(["alice", HOSTILE])  # the class table's order
    first = client.get(f"/student/{safe_name(order[0])}").get_data(as_text=True)
    assert 'id="prev"' not in first and f'href="/student/{safe_name(order[1])}" id="next"' in first
    last = client.get(f"/student/{safe_name(order[1])}").get_data(as_text=True)
    assert 'id="next"' not in last and f'href="/student/{safe_name(order[0])}" id="prev"' in last
    assert "<img src=x" not in first + last  # the neighbour's id, escaped as everywhere


def test_the_class_table_has_the_grade_column_of_the_static_page_when_there_are_grades(small_class):
    from grader.records import StudentResult, TaskResult
    from grader.serve.app import create_app
    from grader.spec import load_assignment
    from grader.store import Gradebook

    app = create_app(small_class, token="the-token")
    assert ">Grade</th>" not in signed_in(app).get("/").get_data(as_text=True)  # no bands: no column
    app.extensions["grader"]["gradebook"].close()
    assignment = load_assignment(TUTORIAL6)
    book = Gradebook(None, small_class)
    run = book.begin_run(assignment, "test")
    tasks = [TaskResult(t.id, t.title, 0.0, t.points, "failed", {}, "x", optional=t.optional) for t in assignment.tasks]
    book.record(assignment.id, run, "alice", content_hash="h0", files=[], measure_key="m0", score_key="s-graded",
                measurements=None, result=StudentResult("alice", 0.0, assignment.max_score, tasks, grade="F"))
    book.finish_run(run, "finished", {})
    book.close()
    app = create_app(small_class, token="the-token")
    try:
        page = signed_in(app).get("/").get_data(as_text=True)
        assert '<th class="sortable" data-kind="text" data-key="grade">Grade</th>' in page
        assert '<td class="grade" data-value="f">F</td>' in page  # sorted case-blind, shown as given
    finally:
        app.extensions["grader"]["gradebook"].close()


def test_an_internal_error_is_the_apps_page_and_its_traceback_is_in_the_log(small_class, caplog):
    from grader.records import Measurements, StudentResult, TaskResult
    from grader.serve.app import create_app
    from grader.spec import load_assignment
    from grader.store import Gradebook

    assignment = load_assignment(TUTORIAL6)
    book = Gradebook(None, small_class)
    run = book.begin_run(assignment, "test")
    measured = Measurements("alice", [], [], [], {}, []).to_json()
    measured["executed"] = 5  # a shape no grader writes: drawing her page is a bug of the grader's
    tasks = [TaskResult(t.id, t.title, 0.0, t.points, "failed", {}, "x", optional=t.optional) for t in assignment.tasks]
    book.record(assignment.id, run, "alice", content_hash="h0", files=[], measure_key="m-bad", score_key="s-bad",
                measurements=measured, result=StudentResult("alice", 0.0, assignment.max_score, tasks))
    book.finish_run(run, "finished", {})
    book.close()
    app = create_app(small_class, token="the-token")
    try:
        client = signed_in(app)
        response = client.get("/student/alice")
        text = response.get_data(as_text=True)
        assert response.status_code == 500 and "Something went wrong in the grader" in text
        assert "Traceback" not in text and "TypeError" not in text and 'href="/"' in text
        assert "Traceback" in caplog.text and "TypeError" in caplog.text  # for whoever fixes it
        assert client.get("/").status_code == 200  # the rest of the class is still served
    finally:
        app.extensions["grader"]["gradebook"].close()
