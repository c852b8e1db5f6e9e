"""The work as it ran, against a hostile notebook run in the real sandboxed kernel: only what this run made.

A notebook file carries the outputs its author saved; cells the grader does not run (blank code, a
``grader-skip`` tag, the rest after a timeout) kept them, and the TA's "work as it ran" showed a student's
forged output as the run's.  Each test writes its own hostile notebook and runs it (``execute_notebook``)."""
from __future__ import annotations

import base64
import io
import json

import nbformat

from conftest import TUTORIAL6
from test_serve_browser import browser  # noqa: F401 (Chromium through Playwright, a fixture)

FORGED = "FORGED: test accuracy 0.99"


def _png() -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 200, 0)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def _saved(text: str) -> list:
    """The outputs a student saves in the file: a line and a figure, neither made by any run."""
    return [nbformat.v4.new_output("stream", name="stdout", text=text + "\n"),
            nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"})]


def _kept(tmp_path, nb) -> tuple[dict, list]:
    """Run ``nb`` as ``measure`` does (the real sandboxed kernel); the work kept and the cells' statuses."""
    from grader.execute import execute_notebook
    from grader.harvest import Harvester
    from grader.intake import collect
    from grader.spec import load_assignment

    assignment = load_assignment(TUTORIAL6)
    folder = tmp_path / "subs" / "mallory"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / "work.ipynb")
    sub = collect(tmp_path / "subs", assignment)[0]
    with execute_notebook(assignment, sub.files[0], sub.root, harvester=Harvester(assignment), seed=1) as ex:
        return ex.executed, [c.status for c in ex.run.cells]


def test_outputs_saved_in_cells_the_grader_did_not_run_are_not_shown_as_the_run(tmp_path):
    nb = nbformat.v4.new_notebook()
    ran = nbformat.v4.new_code_cell("print('made by the run')")
    ran.outputs = _saved(FORGED + " (replaced by the run)")
    blank = nbformat.v4.new_code_cell("   \n")  # blank code: nbclient never runs it, its saved outputs stayed
    blank.outputs = _saved(FORGED)
    skipped = nbformat.v4.new_code_cell("print('never printed')", metadata={"tags": ["grader-skip"]})
    skipped.outputs = _saved(FORGED + " (skip tag)")
    nb.cells = [ran, blank, skipped]
    kept, statuses = _kept(tmp_path, nb)
    text = json.dumps(kept)
    assert "made by the run" in text
    assert FORGED not in text, [c.get("outputs") for c in kept["cells"]]
    assert not [o for c in kept["cells"] for o in c.get("outputs", []) if o["kind"] == "image"]
    assert kept["cells"][2]["status"] == "not run (tagged grader-skip)"  # the runner records it "ok"


def _ran(tmp_path, monkeypatch, source: str):
    """Run a one-cell notebook of ``source`` (then a cell that prints "next"); the notebook as the runner left it."""
    from grader import execute

    reader, seen = execute.read_notebook, {}

    def read(file):
        seen["nb"] = reader(file)
        return seen["nb"]

    monkeypatch.setattr(execute, "read_notebook", read)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source), nbformat.v4.new_code_cell("print('next')")]
    kept, statuses = _kept(tmp_path, nb)
    return seen["nb"], kept, statuses


def _held(nb) -> int:
    """What the runner's notebook holds of outputs and metadata, in characters of JSON."""
    return len(json.dumps([c.get("outputs", []) for c in nb.cells])) + len(json.dumps(nb.metadata))


def test_twenty_thousand_empty_displays_are_not_all_held_by_the_grader(tmp_path, monkeypatch):
    # each counted as 0 bytes against the cell's 64 KB: every one was kept in the grading process
    nb, kept, statuses = _ran(tmp_path, monkeypatch,
                              "for _ in range(20_000):\n    display({'text/plain': ''}, raw=True)")
    assert statuses == ["ok", "ok"]
    assert len(nb.cells[0].outputs) <= 2001 and "dropped" in nb.cells[0].outputs[-1].get("text", "")
    assert nb.cells[1].outputs[0]["text"] == "next\n"


def test_three_thousand_flushed_prints_are_one_output_and_all_kept(tmp_path, monkeypatch):
    # the cap on a cell's outputs must not cut a legitimate loop that prints with flush=True: consecutive prints
    # are one output, as Jupyter shows them
    nb, kept, statuses = _ran(tmp_path, monkeypatch, "for i in range(3000):\n    print(i, flush=True)")
    assert statuses == ["ok", "ok"]
    assert len(nb.cells[0].outputs) == 1
    assert nb.cells[0].outputs[0]["text"].splitlines() == [str(i) for i in range(3000)]


def test_display_updates_do_not_grow_a_cell_past_its_output_cap(tmp_path, monkeypatch):
    # update_display_data replaced a display's data whatever its size: 40 displays of 500 KB each were held
    nb, kept, statuses = _ran(tmp_path, monkeypatch,
                              "shown = [display({'text/plain': 'x'}, raw=True, display_id=True) for _ in range(40)]\n"
                              "for d in shown:\n    d.update({'text/plain': 'y' * 500_000}, raw=True)\n")
    assert statuses == ["ok", "ok"]
    assert _held(nb) < 200_000, _held(nb)



def test_a_lone_surrogate_in_a_notebooks_code_does_not_stop_the_batch(tmp_path):
    from grader.pipeline import grade_batch

    # JSON's "\ud800" escape: nbformat reads it; the grader's write of that student's result raised
    # UnicodeEncodeError and `grader grade` stopped for the whole class (exit 1, a traceback)
    (tmp_path / "subs" / "mallory").mkdir(parents=True)
    (tmp_path / "subs" / "mallory" / "work.ipynb").write_bytes(
        b'{"cells": [{"cell_type": "code", "execution_count": null, "id": "a", "metadata": {}, "outputs": [],'
        b' "source": "x = 1\\nraise ValueError(\\"bad\\")  # \\ud800"}, {"cell_type": "code",'
        b' "execution_count": null, "id": "b", "metadata": {}, "outputs": [], "source": "print(\\"ran \\udfff\\")"}],'
        b' "metadata": {"title": "\\udc80"}, "nbformat": 4, "nbformat_minor": 5}')
    (tmp_path / "subs" / "zoe").mkdir()
    (tmp_path / "subs" / "zoe" / "work.ipynb").write_text(json.dumps(nbformat.v4.new_notebook()))
    grade_batch(tmp_path / "subs", TUTORIAL6, tmp_path / "out", workers=1)
    students = {s["id"]: s for s in json.loads((tmp_path / "out" / "results.json").read_text())["students"]}
    assert set(students) == {"mallory", "zoe"}
    work = (tmp_path / "out" / "students" / "work" / "mallory.html").read_text(encoding="utf-8")
    assert "ValueError" in work and "ran \ufffd" in work  # the cell ran, its text as undecodable bytes are


def test_names_that_are_not_utf8_do_not_stop_the_batch(tmp_path):
    import os

    from grader.api import export_gradebook
    from grader.pipeline import grade_batch

    # a Latin-1 "José" folder from an old zip, a file name of bytes that are no text: Python holds them as lone
    # surrogates, the gradebook's write raised, and `grader grade` stopped for the whole class
    subs = os.fsencode(tmp_path / "subs")
    notebook = json.dumps(nbformat.v4.new_notebook()).encode()
    for folder, name in ((b"Jos\xe9", b"work.ipynb"), (b"mallory", b"w\xff\xfe.ipynb"), (b"zoe", b"work.ipynb")):
        os.makedirs(os.path.join(subs, folder))
        with open(os.path.join(subs, folder, name), "wb") as f:
            f.write(notebook)
    grade_batch(tmp_path / "subs", TUTORIAL6, tmp_path / "out", workers=1)
    students = {s["id"]: s for s in json.loads((tmp_path / "out" / "results.json").read_text())["students"]}
    assert set(students) == {"Jos\\xe9", "mallory", "zoe"}  # the readable id: never two students' one
    assert [f["name"] for f in students["mallory"]["files"]] == ["w\udcff\udcfe.ipynb"]  # JSON's escapes, read back
    assert "w\\udcff\\udcfe.ipynb" in (tmp_path / "out" / "students" / "mallory.html").read_text(encoding="utf-8")
    export_gradebook(tmp_path / "out")  # every format writes
    assert "Jos\\xe9" in (tmp_path / "out" / "export" / "grades.csv").read_text(encoding="utf-8")


def _served(out):
    """``grader serve``'s app over ``out`` on a real server (port 0) in a thread: (base URL, stop)."""
    import threading

    from grader.serve.app import create_app, serve

    app, ready, servers = create_app(out, token="the-token"), threading.Event(), []
    thread = threading.Thread(target=serve, args=(app, "127.0.0.1", 0),
                              kwargs={"ready": lambda s: (servers.append(s), ready.set())}, daemon=True)
    thread.start()
    assert ready.wait(600)

    def stop():
        servers[0].shutdown()
        thread.join(30)
    return f"http://127.0.0.1:{servers[0].port}", stop


def test_in_a_real_browser_a_hostile_notebook_runs_nothing_loads_nothing_and_fits_the_page(browser, tmp_path):
    from PIL import Image

    from test_serve_hostile import _class

    evil = '<img src="http://evil.example/x.png" onerror="window.pwned=1"><script>window.pwned=2</script>'
    tall = io.BytesIO()
    Image.new("L", (2, 40_000), 128).save(tall, format="PNG")  # 80,000 pixels, a few hundred bytes: kept
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell(f"print('{evil}')")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=evil),
                    nbformat.v4.new_output("display_data", data={"text/html": evil, "image/svg+xml": evil,
                                                                 "text/plain": "<HTML>"}),
                    nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(tall.getvalue())
                                                                 .decode(), "text/plain": "<Figure>"})]
    nb.cells = [nbformat.v4.new_markdown_cell(evil), code]
    out = tmp_path / "out"
    _class(out, ["alice", evil], nb, name=f"{evil}.ipynb")
    base, stop = _served(out)
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    asked = []
    page.on("request", lambda r: asked.append(r.url))
    try:
        page.goto(f"{base}/?token=the-token")
        page.wait_for_selector("#students")
        for url in (f"{base}/student/alice", f"{base}/report/work/alice.html", f"{base}/report/alice.html"):
            page.goto(url)
            page.wait_for_load_state("load")
            assert page.evaluate("window.pwned") is None, url
        page.goto(f"{base}/student/alice")
        box = page.locator("img.output").first.bounding_box()
        assert box is not None and box["height"] <= 800, box  # the 40,000-pixel-tall plot within the window
    finally:
        page.close()
        stop()
    assert asked and all(u.startswith((base, "data:")) for u in asked), [u for u in asked if "evil" in u]
