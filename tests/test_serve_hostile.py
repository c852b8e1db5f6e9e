"""``grader serve`` and the work as it ran, attacked: by a student's notebook, and on the TA's machine.

Each test writes its own hostile submission (a notebook, a student id, a request) and asserts what the
TA's page, the gradebook or the server does with it.  Fast: the real ``executed.keep``, a real gradebook
(SQLite) and the real Flask app through its test client; runs in the sandboxed kernel are in
``test_serve_hostile_work``."""
from __future__ import annotations

import json

import nbformat
import pytest

from grader import executed

MB4 = executed.MAX_NOTEBOOK_BYTES


def _size(kept: dict) -> int:
    return len(json.dumps(kept, ensure_ascii=False).encode())


def test_a_notebook_of_long_cells_in_four_byte_characters_is_kept_within_its_bound():
    nb = nbformat.v4.new_notebook()  # 400 cells of 20,000 emoji: 32 MB of code, which was kept whole
    nb.cells = [nbformat.v4.new_code_cell("\U0001F600" * executed.MAX_SOURCE_CHARS) for _ in range(400)]
    kept = executed.keep("big.ipynb", nb)
    assert _size(kept) <= MB4 + 64 * 1024
    assert any("were not kept: the notebook is larger than the 4 MB kept" in n for n in kept["notes"])
    assert kept["cells"][0]["source"].startswith("\U0001F600")


def test_two_hundred_thousand_empty_outputs_are_bounded():
    cell = nbformat.v4.new_code_cell("for _ in range(200_000): display({'text/plain': ''}, raw=True)")
    cell.outputs = [{"output_type": "display_data", "data": {"text/plain": ""}, "metadata": {}}] * 200_000
    nb = nbformat.v4.new_notebook()
    nb.cells = [cell, nbformat.v4.new_code_cell("print('after')")]
    kept = executed.keep("many.ipynb", nb)
    assert _size(kept) <= MB4 + 64 * 1024
    outs = kept["cells"][0]["outputs"]
    assert len(outs) < 100_000 and "larger than the 4 MB kept" in outs[-1]["text"]
    assert len(executed.render("mallory", [kept]).encode()) <= 4 * MB4  # the page drawn from it, bounded too


# ---- the server, attacked from the TA's machine -------------------------------------------------------------

pytest.importorskip("flask")


def _class(out, ids: list[str], notebook=None, name: str = "work.ipynb", files=()) -> None:
    """Record a class of ``ids`` (each failing every task; ``notebook``'s work kept) in a real gradebook in ``out``
    and draw its pages."""
    from conftest import TUTORIAL6
    from grader.pipeline import render_reports
    from grader.records import Measurements, StudentResult, TaskResult
    from grader.spec import load_assignment
    from grader.store import Gradebook

    out.mkdir(parents=True, exist_ok=True)
    assignment = load_assignment(TUTORIAL6)
    book = Gradebook(None, out)
    run = book.begin_run(assignment, "test")
    for i, sid in enumerate(ids):
        tasks = [TaskResult(t.id, t.title, 0.0, t.points, "failed", {}, f"{t.id} not passed.", optional=t.optional)
                 for t in assignment.tasks]
        result = StudentResult(sid, 0.0, assignment.max_score, tasks, notebooks=[{"name": name}], files=list(files))
        measured = Measurements(sid, [], [], [], {}, [])
        measured.executed = [executed.keep(name, notebook)] if notebook is not None else []
        book.record(assignment.id, run, sid, content_hash=f"h{i}", files=[], measure_key=f"m{i}",
                    score_key=f"s{i}", measurements=measured.to_json(), result=result)
    book.finish_run(run, "finished", {})
    book.close()
    render_reports(TUTORIAL6, out)


def _app(out, **kw):
    from grader.serve.app import create_app

    return create_app(out, token="the-token", **kw)


def _signed_in(app, host="localhost"):
    client = app.test_client()
    assert client.get("/?token=the-token", headers={"Host": host}).status_code == 303
    return client


def _rows(out):
    import sqlite3

    c = sqlite3.connect(out / "gradebook.sqlite")
    try:
        return c.execute("select task_id, action, points, reason, by from overrides order by id").fetchall()
    finally:
        c.close()


def test_a_page_that_reaches_the_server_under_another_host_name_is_refused(tmp_path):
    # DNS rebinding: evil.example resolves to 127.0.0.1; the browser then sends "Host: evil.example:8765"
    _class(tmp_path / "out", ["alice"])
    app = _app(tmp_path / "out")
    client = app.test_client()
    for host in ("evil.example:8765", "evil.example", "127.0.0.1.evil.example", "localhost.evil.example:8765"):
        refused = client.get("/?token=the-token", headers={"Host": host})
        assert refused.status_code == 403 and "grader_token" not in refused.headers.get("Set-Cookie", ""), host
    for host in ("localhost:8765", "127.0.0.1:8765", "[::1]:8765", "LOCALHOST"):
        assert _signed_in(app, host).get("/", headers={"Host": host}).status_code == 200, host
    signed = _signed_in(app)
    assert signed.get("/student/alice", headers={"Host": "evil.example:8765"}).status_code == 403


def test_a_server_bound_to_an_address_answers_to_it_and_to_any_name_only_on_every_address(tmp_path):
    _class(tmp_path / "out", ["alice"])
    lan = _app(tmp_path / "out", host="192.0.2.7")
    assert _signed_in(lan, "192.0.2.7:8765").get("/", headers={"Host": "192.0.2.7:8765"}).status_code == 200
    assert lan.test_client().get("/?token=the-token", headers={"Host": "evil.example"}).status_code == 403
    everywhere = _app(tmp_path / "out", host="0.0.0.0")  # the TA asked for every address: a team's own names
    assert _signed_in(everywhere, "grading-box.lan:8765").get(
        "/", headers={"Host": "grading-box.lan:8765"}).status_code == 200


def test_the_tokens_redirect_keeps_the_query_and_never_leaves_the_page(tmp_path):
    _class(tmp_path / "out", ["alice"])
    client = _app(tmp_path / "out").test_client()
    # a link a student could plant for a TA who has the token: url_for's own arguments made another URL of it
    cases = {"/?token=the-token&_external=1&_scheme=https": "/?_external=1&_scheme=https",
             "/?token=the-token&_anchor=x": "/?_anchor=x",
             "/no/such/page?token=the-token": "/",
             "/student/alice?token=the-token&name=bob": "/student/alice?name=bob",
             "/?q=al+ice&token=the-token&q=b": "/?q=al+ice&q=b"}
    for url, where in cases.items():
        response = client.get(url)
        assert response.status_code == 303, (url, response.status_code)
        assert response.headers["Location"] == where, url


def test_pages_may_not_be_framed_by_another_site_even_by_older_browsers(tmp_path):
    _class(tmp_path / "out", ["alice"])
    client = _signed_in(_app(tmp_path / "out"))
    for url in ("/", "/student/alice", "/review", "/report/alice"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["X-Frame-Options"] == "SAMEORIGIN", url
        assert "frame-ancestors 'self'" in response.headers["Content-Security-Policy"], url
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_serve_on_every_address_warns_and_on_localhost_does_not(tmp_path):
    import socket

    from click.testing import CliRunner

    from grader.cli import main

    _class(tmp_path / "out", ["alice"])
    with socket.socket() as taken:  # the port is in use: the command says so and stops, after its warning
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        wide = CliRunner().invoke(main, ["serve", "-o", str(tmp_path / "out"), "--host", "0.0.0.0", "--port", port])
        local = CliRunner().invoke(main, ["serve", "-o", str(tmp_path / "out"), "--host", "127.0.0.1", "--port", port])
    assert wide.exit_code != 0 and "in use" in wide.output  # Werkzeug's own words
    assert "warning:" in wide.output and "plain HTTP" in " ".join(wide.output.split())
    assert local.exit_code != 0 and "in use" in local.output and "warning:" not in local.output


def test_a_student_named_like_anothers_page_is_framed_with_their_own_page(tmp_path):
    import re

    # "alice.html" is a valid id (its own file name, students/alice.html.html); /report/alice.html meant alice
    _class(tmp_path / "out", ["alice", "alice.html"])
    client = _signed_in(_app(tmp_path / "out"))
    page = client.get("/student/alice.html").get_data(as_text=True)
    framed = re.search(r'<iframe[^>]* src="([^"]+)"', page).group(1)
    shown = client.get(framed)
    assert shown.status_code == 200
    body = shown.get_data(as_text=True)
    assert "<title>alice.html" in body or ">alice.html<" in body, body[:400]
    own = client.get(re.search(r'<iframe[^>]* src="([^"]+)"', client.get("/student/alice").get_data(as_text=True))
                     .group(1)).get_data(as_text=True)
    assert "alice.html" not in own[:2000]


def _form(client, name: str, task: str) -> dict:
    import re

    page = client.get(f"/student/{name}").get_data(as_text=True)
    block = page[page.index(f'id="task-{task}"'):]
    block = block[:block.index("</form>")]
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', block))


def test_points_that_are_no_score_and_tasks_or_students_not_in_the_class_change_nothing(tmp_path):
    _class(tmp_path / "out", ["alice"])
    client = _signed_in(_app(tmp_path / "out"))
    fields = _form(client, "alice", "1a")
    for points in ("nan", "NaN", "inf", "-inf", "-1", "1e308", "0x10", "", "3; drop table overrides"):
        said = client.post("/student/alice/override", data={**fields, "points": points, "reason": "r", "action": "set"},
                           follow_redirects=True).get_data(as_text=True)
        assert "not changed" in said, points
    for task in ("9z", "<b>1a</b>", "1a\x00", "../1a"):
        said = client.post("/student/alice/override", data={**fields, "task": task, "points": "1", "reason": "r",
                                                            "action": "set"}, follow_redirects=True)
        assert said.status_code == 200 and "not changed" in said.get_data(as_text=True), task
        assert "<b>1a</b>" not in said.get_data(as_text=True)
    assert client.post("/student/mallory/override", data={**fields, "points": "1", "reason": "r",
                                                          "action": "set"}).status_code == 404
    assert _rows(tmp_path / "out") == []


def test_a_reason_with_terminal_and_bidi_controls_is_refused_as_by_the_cli_and_an_old_one_shown_escaped(tmp_path):
    from click.testing import CliRunner

    from grader.api import override_score
    from grader.cli import main

    out = tmp_path / "out"
    _class(out, ["alice", "bob"])
    reason = "\x1b[2J\x1b]0;owned\x07ok\u202eevil\r\nforged: line"
    client = _signed_in(_app(out))
    for hostile in ({"reason": reason, "by": "tara"}, {"reason": "checked", "by": "tara\x1b[31m"},
                    {"reason": "x" * 2001, "by": "tara"}):
        said = client.post("/student/alice/override", data={**_form(client, "alice", "1a"), "points": "2",
                                                            "action": "set", **hostile}, follow_redirects=True)
        assert "Task 1a: not changed: the " in said.get_data(as_text=True), hostile["by"]
        done = CliRunner().invoke(main, ["override", "bob", "1a", "2", "--reason", hostile["reason"], "--by",
                                         hostile["by"], "-o", str(out)])
        assert done.exit_code == 2, done.output  # refused alike, by one check (grader.ci.inputs)
    assert _rows(out) == []
    # a gradebook an older grader wrote (it took the reason as given): shown escaped
    override_score("alice", "1a", 2.0, reason=reason, by="tara\x1b[31m", out_dir=out)
    rows = _rows(out)
    assert rows[0][:3] == ("1a", "set", 2.0) and "\n" not in rows[0][3] and rows[0][3].endswith("forged: line")
    page = client.get("/student/alice").get_data(as_text=True)
    assert "\x1b" not in page and "\u202e" not in page and "\\x1b[2J" in page and "\\u202e" in page
    static = (out / "students" / "alice.html").read_text()
    assert "\x1b" not in static and "\u202e" not in static


def _chunks(png: bytes) -> list[bytes]:
    import struct

    found, at = [], 8
    while at < len(png):
        size, kind = struct.unpack(">I4s", png[at:at + 8])
        found.append(kind)
        at += 12 + size
    return found


@pytest.mark.parametrize("mode", ["RGB", "P", "LA", "I;16"])
def test_a_plot_carrying_a_colour_profile_exif_and_text_is_kept_as_its_pixels_only(mode):
    import base64
    import io

    from PIL import Image, PngImagePlugin

    # an ICC profile is a binary program of sorts that the TA's browser parses (colour management): never passed on
    image = Image.new("RGB", (6, 4), (10, 20, 30)).convert(mode) if mode != "I;16" else Image.new("I;16", (6, 4), 7)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<script>alert(1)</script>")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta/>", zip=True)
    exif = image.getexif()
    exif[0x010E] = "hostile"
    out = io.BytesIO()
    image.save(out, "PNG", icc_profile=b"\0" * 128 + b"acsp" * 200, pnginfo=info, exif=exif, dpi=(1e6, 1e6))
    assert b"iCCP" in _chunks(out.getvalue())
    cleaned = executed.clean_png(base64.b64encode(out.getvalue()).decode())
    assert cleaned is not None
    assert set(_chunks(cleaned)) <= {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}, _chunks(cleaned)
    with Image.open(io.BytesIO(cleaned)) as img:
        assert img.size == (6, 4)


def test_no_route_serves_a_file_outside_the_students_pages(tmp_path):
    out = tmp_path / "out"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(1)")]
    _class(out, ["alice", "..", "../../gradebook"], nb)  # ids that are paths: their names are hashed, never a path
    (out / "secret.html").write_text("SECRET")
    (out / "students" / "work" / "..html").write_text("SECRET")
    client = _signed_in(_app(out))
    for url in ("/report/..%2fsecret", "/report/%2e%2e%2fsecret.html", "/report/..", "/report/%2e%2e",
                "/report/work/..%2f..%2fsecret.html", "/report/work/%2e%2e%2falice.html", "/report/work/..html",
                "/report/.html", "/report/..%2F..%2Fgradebook.sqlite", "/student/..%2falice", "/report/%00alice",
                "/report/alice%00.html", "/report/" + "a" * 5000):
        response = client.get(url)
        assert response.status_code in (404, 308), (url, response.status_code)
        assert b"SECRET" not in response.data and b"SQLite" not in response.data, url


def test_the_runners_client_keeps_no_widget_state_a_kernel_sends():
    from grader.execute.runner import CappedClient

    # what a kernel sends for Comm(target_name="jupyter.widget", data={"state": ...}): nbclient kept every comm's
    # state for the notebook's metadata, 1 MB a message (the relay's cap), any number of comms
    client = CappedClient(nbformat.v4.new_notebook())
    for i in range(3):
        client.handle_comm_msg([], {"msg_type": "comm_open", "header": {"msg_type": "comm_open"}, "buffers": [],
                                    "content": {"comm_id": f"c{i}", "target_name": "jupyter.widget",
                                                "data": {"state": {"_model_module": "m", "_model_name": "n",
                                                                   "v": "z" * 500_000}, "buffer_paths": []}}}, 0)
    assert client.widget_state == {} and client.widget_buffers == {}


def test_the_servers_request_log_never_shows_the_token(tmp_path, caplog):
    import logging
    import threading
    import urllib.error
    import urllib.request

    from grader.serve.app import serve

    _class(tmp_path / "out", ["alice"])
    app, ready = _app(tmp_path / "out"), threading.Event()
    servers = []
    thread = threading.Thread(target=serve, args=(app, "127.0.0.1", 0),
                              kwargs={"ready": lambda s: (servers.append(s), ready.set())}, daemon=True)
    caplog.set_level(logging.INFO, logger="werkzeug")
    thread.start()
    assert ready.wait(600)
    try:
        base = f"http://127.0.0.1:{servers[0].port}"
        for url in (f"{base}/?token=the-token", f"{base}/student/alice?q=x&token=the-token"):
            urllib.request.build_opener(urllib.request.HTTPCookieProcessor()).open(url).read()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/?token=the-token-guessed")
    finally:
        servers[0].shutdown()
        thread.join(30)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "GET /student/alice" in logged and "the-token" not in logged, logged


def _surrogate_notebook():
    """A notebook holding lone surrogates (JSON's "\\ud800" escape), which UTF-8 cannot write: the grader's reader
    now makes them U+FFFD (``formats.read_notebook_bytes``); the keeper and the pages stand on their own."""
    return nbformat.from_dict(json.loads(
        b'{"cells": [{"cell_type": "code", "execution_count": null, "id": "a", "metadata": {},'
        b' "outputs": [{"output_type": "stream", "name": "stdout", "text": "out \\udfff"}],'
        b' "source": "print(1)  # \\ud800"}, {"cell_type": "markdown", "id": "b",'
        b' "metadata": {}, "source": "md \\udc80"}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'))


def test_lone_surrogates_in_a_notebook_are_kept_as_visible_escapes():
    kept = executed.keep("work\udcff.ipynb", _surrogate_notebook())
    text = json.dumps(kept, ensure_ascii=False)
    text.encode("utf-8")  # raised: surrogates not allowed
    assert "\\ud800" in kept["cells"][0]["source"] and "\\udc80" in kept["cells"][1]["source"]
    page = executed.render("mallory", [kept])
    assert "\\ud800" in page and "\\udfff" in page and "work\\udcff.ipynb" in page
    page.encode("utf-8")


def test_a_notebook_with_lone_surrogates_does_not_stop_the_class_pages_or_the_server(tmp_path):
    from grader import textsafe

    assert textsafe.visible("a\ud800b") == "a\\ud800b" and textsafe.terminal("\udcff") == "\\udcff"
    assert json.loads(textsafe.json_text({"k": "\ud800"})) == {"k": "\ud800"}
    assert "\ud800" not in textsafe.json_text({"k": "\ud800"})
    out = tmp_path / "out"
    _class(out, ["alice", "bob"], _surrogate_notebook())  # drew every page: the work page's write raised
    assert "\\ud800" in (out / "students" / "work" / "alice.html").read_text(encoding="utf-8")
    client = _signed_in(_app(out))
    page = client.get("/student/alice")
    assert page.status_code == 200 and "\\ud800" in page.get_data(as_text=True)


def test_hostile_file_and_notebook_names_and_code_are_text_on_every_page(tmp_path):
    from grader.records import FileResult

    evil = '</script><script>alert(1)</script>"\'><img src=x onerror=alert(2)>\u202e../../x'
    name = f"{evil}.ipynb"
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell(f"s = '{evil}'\nprint(s)")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=evil + "\n"),
                    nbformat.v4.new_output("display_data", data={"text/html": evil, "image/svg+xml": evil,
                                                                 "application/javascript": "alert(3)",
                                                                 "text/plain": "<HTML object>"})]
    nb.cells = [nbformat.v4.new_markdown_cell(evil), code]
    files = [FileResult(name, "notebook", "executed", message=evil),
             FileResult(f"{name}, cell 2: model trained by model.fit (capture 1)", "keras_zip", "graded", "1c", evil,
                        captured=True)]
    out = tmp_path / "out"
    _class(out, ["alice"], nb, name=name, files=files)
    client = _signed_in(_app(out))
    pages = {"student": client.get("/student/alice"), "feedback": client.get("/report/alice.html"),
             "work": client.get("/report/work/alice.html")}
    for what, response in pages.items():
        assert response.status_code == 200, what
        body = response.get_data(as_text=True)
        assert "<script>alert" not in body and "<img src=x" not in body and "\u202e" not in body, what
        assert "alert(3)" not in body, what
    shown = pages["student"].get_data(as_text=True)
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in shown and "\\u202e" in shown
    assert "model → task 1c" in shown  # the cell that made it, though its notebook's name is hostile


def test_a_form_opened_before_a_cli_override_is_refused_and_says_by_whom(tmp_path):
    from click.testing import CliRunner

    from grader.cli import main

    out = tmp_path / "out"
    _class(out, ["alice"])
    client = _signed_in(_app(out))
    stale = _form(client, "alice", "1b")  # the TA opened the page; meanwhile a colleague uses the terminal
    done = CliRunner().invoke(main, ["override", "alice", "1b", "4", "--reason", "seen in office hours", "--by", "ann",
                                     "-o", str(out)])
    assert done.exit_code == 0, done.output
    said = client.post("/student/alice/override", data={**stale, "points": "1", "reason": "too generous",
                                                        "by": "tara", "action": "set"}, follow_redirects=True)
    text = said.get_data(as_text=True)
    assert "Another TA changed this task since you opened the page" in text and "ann" in text
    assert _rows(out) == [("1b", "set", 4.0, "seen in office hours", "ann")]
    fresh = _form(client, "alice", "1b")  # a reload shows it as it stands, and the TA may then decide
    client.post("/student/alice/override", data={**fresh, "points": "1", "reason": "too generous", "by": "tara",
                                                 "action": "set"})
    assert _rows(out)[-1] == ("1b", "set", 1.0, "too generous", "tara")


def test_a_file_named_like_a_captured_model_is_not_shown_as_a_cells_model(tmp_path):
    """A handed-in model file named "work.ipynb, cell 2: model trained by model.fit (capture 1).h5" read, in the
    work as it ran, as the model cell 2 trained: only the grader's own record of a capture marks a cell."""
    import shutil

    from conftest import ROOT, TUTORIAL6
    from grader import pipeline

    forged = "work.ipynb, cell 2: model trained by model.fit (capture 1).h5"
    (tmp_path / "subs" / "mallory").mkdir(parents=True)
    shutil.copy(ROOT / "submissions" / "tutorial6" / "bob" / "1c.h5", tmp_path / "subs" / "mallory" / forged)
    pipeline.grade_batch(tmp_path / "subs", TUTORIAL6, tmp_path / "out", workers=1)
    student = json.loads((tmp_path / "out" / "results.json").read_text())["students"][0]
    [entry] = [f for f in student["files"] if f["name"] == forged]
    assert entry["outcome"] == "graded" and entry["captured"] is False  # graded as the file it is
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("y = 2")])
    assert executed.models_by_cell(student["files"]) == {}
    page = executed.render("mallory", [executed.keep("work.ipynb", nb)], files=student["files"])
    assert "model →" not in page
