"""grader serve in a real browser (Playwright driving the system's Chromium): a TA goes from the printed URL to
an overridden task with its reason and back, without a terminal.

A small class is graded with `grader grade` (bob's demo models; carol's, one of them truncated: "could not be
graded"; nina, a short notebook that prints, plots and tries to inject HTML), exported, and served with `grader
serve --port 0 --by tara`.  The browser opens the class, searches
for a student, overrides a task with a reason and sees it on the page; the test reads grades.csv and the
gradebook's audit trail; the browser undoes it.  Set GRADER_SERVE_SCREENSHOT=path to keep a screenshot (the
README's docs/serve.png)."""
from __future__ import annotations

import contextlib
import csv
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import PATIENCE_MS, ROOT, TEST_SECRET, TUTORIAL6, PatientBrowser

#: a student id with no place to break it, wider than a phone
LONG = "a_student_whose_id_runs_on_" + "and_on" * 12
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
DEMO = ROOT / "submissions" / "tutorial6"

NOTEBOOK = [
    "print('hello from nina: <b>not bold</b>')",
    "import io\nimport matplotlib.pyplot as plt\nfrom IPython.display import Image, display\nplt.plot([0, 1, 4, 9])\n"
    "buf = io.BytesIO()\nplt.savefig(buf, format='png')\ndisplay(Image(buf.getvalue()))",
    "plt.figure()\nplt.scatter([0, 1], [1, 0])\nplt.show()",  # shown as in Jupyter: the kernel plots inline
    "from IPython.display import HTML, display\ndisplay(HTML('<b id=\"pwn\">injected</b>'))",
    "raise ValueError('nina stops here')",
]


def grader(*args, cwd):
    return subprocess.run([sys.executable, "-m", "grader.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=1800, env={**os.environ, "GRADER_SECRET": TEST_SECRET})


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        pytest.skip("no Chromium is installed (apt-get install chromium; .ci/run does)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=PATIENCE_MS)
        except Exception as e:  # a Chromium this Playwright cannot drive
            pytest.skip(f"Playwright cannot start {CHROMIUM}: {str(e).splitlines()[0]}")
        yield PatientBrowser(b)
        b.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The class graded, exported and served: (output folder, the URL serve printed)."""
    work = tmp_path_factory.mktemp("ta")
    shutil.copytree(DEMO / "bob", work / "class" / "bob")
    shutil.copytree(DEMO / "carol", work / "class" / "carol")
    (work / "class" / LONG).mkdir()  # an id longer than a phone's screen, in one word
    shutil.copy(DEMO / "carol" / "1c.h5", work / "class" / LONG / "1c.h5")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in NOTEBOOK]
    (work / "class" / "nina").mkdir()
    nbformat.write(nb, work / "class" / "nina" / "work.ipynb")
    out = work / "out"
    done = grader("grade", "class", "-a", TUTORIAL6, "-o", out, "--workers", "1", cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    done = grader("export", "-o", out, "--format", "csv", cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    with serving(out, "--by", "tara") as url:
        yield out, url


@contextlib.contextmanager
def serving(out: Path, *options):
    """`grader serve -o out --port 0 [options]` running: the URL it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "grader.cli", "serve", "-o", str(out), "--port", "0", *options],
                            cwd=out.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("Serving tutorial6 at http://127.0.0.1:"), (line, proc.stderr.read()
                                                                           if proc.poll() is not None else "")
        yield line.split(" at ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def csv_row(out: Path, student: str) -> dict:
    with open(out / "export" / "grades.csv", newline="", encoding="utf-8") as f:
        return next(r for r in csv.DictReader(f) if r["student_id"] == student)


def audit(out: Path) -> list[tuple]:
    c = sqlite3.connect(f"file:{out / 'gradebook.sqlite'}?mode=ro", uri=True)
    try:
        return c.execute("select s.student_id, o.task_id, o.action, o.points, o.reason, o.by from overrides o "
                         "join students s on s.id = o.student order by o.id").fetchall()
    finally:
        c.close()


def test_a_ta_overrides_a_task_in_the_browser_and_undoes_it(browser, served):
    out, url = served
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(url.replace("token=", "token=wrong"))
    assert "403" in page.content()  # a wrong token: nothing of the class
    page.goto(url)
    assert "token=" not in page.url  # the token went to a cookie
    assert page.locator("#students tbody tr").count() == 4
    page.set_viewport_size({"width": 400, "height": 800})  # a phone: the table scrolls, the page does not
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert page.locator("#students tbody tr td.sid").first.is_visible()
    page.set_viewport_size({"width": 1200, "height": 900})
    page.fill("#search", "bo")
    assert page.locator("#students tbody tr:visible").count() == 1
    assert page.locator("#students tbody tr:visible td.sid").inner_text() == "bob"
    if os.environ.get("GRADER_SERVE_SCREENSHOT"):
        page.fill("#search", "")
        page.screenshot(path=os.environ["GRADER_SERVE_SCREENSHOT"], full_page=False)
        page.fill("#search", "bo")
    page.click("#students tbody tr:visible td.sid a")
    assert page.inner_text("#student-id") == "bob"

    before = float(csv_row(out, "bob")["task_1a"])
    page.click("#override-1a summary")  # the form is folded until asked for
    form = page.locator("#task-1a form.override")
    form.locator("input[name=points]").fill("4")
    form.locator("input[name=reason]").fill("right model; checked the plot by hand")
    assert form.locator("input[name=by]").input_value() == "tara"  # grader serve --by tara: not typed again
    form.locator("button[value=set]").click()
    assert "Task 1a: set to 4 of" in page.inner_text(".flash"), page.inner_text("body")[:3000]
    assert "✎ set by tara" in page.inner_text("#task-1a")
    assert "right model; checked the plot by hand" in page.inner_text("#task-1a")
    row = csv_row(out, "bob")
    assert float(row["task_1a"]) == 4 and "1a" in row["overridden"]
    assert audit(out) == [("bob", "1a", "set", 4.0, "right model; checked the plot by hand", "tara")]

    page.goto(url.split("?")[0])  # the class page shows it too, marked
    assert "✎" in page.locator("#students tbody tr", has_text="bob").inner_text()
    page.click("text=bob")
    form = page.locator("#task-1a form.undo")  # no form to open: the undo is on the task
    form.locator("input[name=reason]").fill("undo: it was right as graded")
    form.locator("button[value=undo]").click()
    assert "the override was undone" in page.inner_text(".flash.ok")
    assert "✎" not in page.inner_text("#task-1a h3")
    row = csv_row(out, "bob")
    assert float(row["task_1a"]) == before and row["overridden"] == ""
    assert audit(out)[-1][:3] == ("bob", "1a", "undo")


def test_the_notebook_as_it_ran_is_on_the_students_page_and_its_html_is_not(browser, served):
    out, url = served
    page = browser.new_page()
    page.goto(url)
    page.click("text=nina")
    page.locator("#work").wait_for()  # nina's page, with her work as it ran
    text = page.inner_text("body")
    assert "hello from nina: <b>not bold</b>" in text  # printed text, shown as text
    assert page.locator("#pwn").count() == 0 and "[its text/html form is not shown]" in text
    failed = page.locator(".cell.failed")  # the cell that raised: its status in red, the others' in green
    assert failed.count() == 1 and "nina stops here" in failed.inner_text()
    red, green = (page.eval_on_selector(f"{cell} .cell-status", "e => getComputedStyle(e).color")
                  for cell in (".cell.failed", ".cell.code:not(.failed)"))
    assert red == "rgb(142, 27, 27)" and green == "rgb(27, 94, 32)"
    # the plots as checked PNGs, as Jupyter shows them: cell 2's displayed image and its open figure (drawn at
    # the cell's end), cell 3's plt.show()
    assert page.locator("img.output").count() == 3
    # the static page links the same work, written beside it
    static = (out / "students" / "nina.html").read_text()
    assert 'href="work/nina.html"' in static and (out / "students" / "work" / "nina.html").is_file()
    frame = page.frame_locator("iframe.report")  # the feedback page, framed, links the same work
    frame.locator("#work-link a").click()
    frame.locator("section.work").wait_for()  # the frame's new page (its old one has no such section)
    assert "hello from nina" in frame.locator("section.work").inner_text()
    page.goto((out / "students" / "work" / "nina.html").as_uri())
    assert "hello from nina" in page.inner_text("body") and page.locator("#pwn").count() == 0


#: what a cell's mark is for each status: the static pages' (grader.report.STATUSES)
MARKS = {"passed": "✓", "partial": "~", "failed": "✗", "missing": "–", "error": "⚠"}


def _style(page, selector: str) -> dict:
    return page.eval_on_selector(selector, "e => { const s = getComputedStyle(e); return {background: "
                                           "s.backgroundColor, color: s.color, outline: s.outlineStyle}; }")


def test_serve_marks_each_result_as_the_static_pages_do(browser, served):
    """One language: the marks, words, legend and colours of the class page (index.html) are serve's too, and
    error (carol's truncated 2a.h5) differs from failed in its mark, its colour and its dashed outline."""
    from grader.report import STATUSES

    assert {s: m for s, (m, _, _) in STATUSES.items()} == MARKS
    out, url = served
    static = browser.new_page(viewport={"width": 1200, "height": 900})
    static.goto((out / "index.html").as_uri())
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(url)
    legend = page.locator("#legend li")
    for status, (mark, word, meaning) in STATUSES.items():
        entry = legend.filter(has=page.locator(f".status.{status}")).inner_text()
        assert entry.startswith(f"{mark} {word}") and meaning in entry, entry
        assert static.locator("#legend li", has_text=meaning).count() == 1  # the static legend says the same
    for status in STATUSES:  # the same colours and outline, mark for mark
        assert _style(page, f"#legend .status.{status}") == _style(static, f"#legend .status.{status}"), status
    error, failed = _style(page, "#legend .status.error"), _style(page, "#legend .status.failed")
    assert error["outline"] == "dashed" and failed["outline"] != "dashed" and error["background"] != failed["background"]
    carol = page.locator("#students tbody tr", has_text="carol")
    cells = carol.locator("td[data-status]")
    statuses = cells.evaluate_all("cs => cs.map(c => c.getAttribute('data-status'))")
    texts = cells.evaluate_all("cs => cs.map(c => c.textContent.trim())")
    assert "error" in statuses and "passed" in statuses
    for status, text in zip(statuses, texts):  # colour is never alone: each cell's mark and (hidden) word
        mark, word, _ = STATUSES[status]
        assert text.startswith(mark) and text.endswith(word), (status, text)
    column = statuses.index("error")
    static_text = static.locator("#students tbody tr", has_text="carol").locator("td.cell").nth(column).inner_text()
    assert static_text.startswith("⚠") and texts[column].startswith("⚠")
    page.click("#nav-review")  # the review queue marks it so too, first, and links her task
    first = page.locator("#review tr").nth(1)
    assert first.locator(".status.error").inner_text().strip() == "⚠ could not be graded"
    first.locator("a", has_text="carol").click()
    assert page.url.endswith("/student/carol#task-2a")  # her page: the same mark and words on the task
    assert page.inner_text("#task-2a h3 .status.error").strip() == "⚠ could not be graded"
    assert not page.locator("#legend").is_visible()  # folded on a student's page, one click away
    page.click("text=What the marks mean")
    assert page.locator("#legend li", has_text="could not be graded").is_visible()


def test_two_servers_on_one_machine_keep_their_own_sign_in(browser, served, tmp_path):
    """Two `grader serve` on 127.0.0.1 (cookies ignore ports), in one browser: signing in to the second keeps
    the first signed in, and a form on each still works."""
    out, url = served
    other = tmp_path / "other"
    shutil.copytree(out, other)  # another class, its own gradebook
    with serving(other) as second:
        context = browser.new_context()
        try:
            first_page, second_page = context.new_page(), context.new_page()
            first_page.goto(url)
            second_page.goto(second)
            assert len({c["name"] for c in context.cookies() if c["name"].startswith("grader_token_")}) == 2
            for page, folder in ((first_page, out), (second_page, other)):
                page.goto(page.url.split("?")[0] + "student/carol")  # signed in still: no token in the URL
                assert page.inner_text("#student-id") == "carol", page.inner_text("body")[:500]
                page.click("#override-1c summary")
                form = page.locator("#task-1c form.override")
                form.locator("input[name=points]").fill("1")
                form.locator("input[name=reason]").fill(f"on {folder.name}")
                form.locator("button[value=set]").click()
                assert "Task 1c: set to 1 of" in page.inner_text("#task-1c .flash.ok")
            assert audit(other)[-1][:5] == ("carol", "1c", "set", 1.0, "on other")
            assert audit(out)[-1][:5] == ("carol", "1c", "set", 1.0, "on out")
            assert audit(out)[-1][5] == "tara" and audit(other)[-1][5] != "tara"  # --by is the first's only
        finally:
            context.close()


def test_an_override_far_down_the_page_says_what_happened_where_the_ta_is(browser, served):
    out, url = served
    page = browser.new_page(viewport={"width": 400, "height": 700})
    page.goto(url)
    page.click("text=bob")
    page.click("#override-2a summary")  # 2a: the seventh task, far below the page's top at 400 px
    form = page.locator("#task-2a form.override")
    form.locator("input[name=points]").fill("2")
    form.locator("input[name=reason]").fill("ring data plotted by hand")
    form.locator("button[value=set]").click()
    said = page.locator("#task-2a .flash.ok")
    assert "Task 2a: set to 2 of" in said.inner_text()
    # the page lands on the task (#task-2a), and the message is there, on screen, not at the page's top
    box = said.bounding_box()
    assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= 700, box
    page.click("#override-2a summary")
    form = page.locator("#task-2a form.override")  # a refusal, the same way (a blank reason the browser lets by)
    form.locator("input[name=reason]").fill("  ")
    form.locator("button[value=set]").click()
    refused = page.locator("#task-2a .flash.refused")
    assert "Give a reason" in refused.inner_text() and 0 <= refused.bounding_box()["y"] < 700
    page.locator("#task-2a form.undo button[value=undo]").click()
    assert "the override was undone" in page.inner_text("#task-2a .flash.ok")


def test_every_page_fits_a_phone_and_a_wrong_link_says_where_to_go(browser, served):
    out, url = served
    page = browser.new_page(viewport={"width": 400, "height": 800})
    page.goto(url)
    base = page.url.split("?")[0]
    for path in ("", "review", "student/bob", "student/carol", "student/nina", f"student/{LONG}", "student/nobody",
                 "student/bob/override"):
        page.goto(base + path)
        wide = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert wide[0] <= wide[1], (path, wide)
    page.goto(base)  # the pinned student column stays narrow for a long id: the tasks beside it are seen
    pinned = page.locator("#students tbody tr", has_text=LONG[:20]).locator("td.sid").bounding_box()
    assert pinned["width"] <= 400 / 2, pinned
    assert page.locator("#students tbody tr", has_text=LONG[:20]).locator("td.sid").get_attribute("title") == LONG
    page.goto(base + "student/carol")  # through the class without going back to it
    page.click("#next")
    assert page.inner_text("#student-id") == "nina"
    page.click("#prev")
    assert page.inner_text("#student-id") == "carol"
    page.goto(base + "student/nobody")  # a stale link: the app's page, a way back, no bare error
    assert page.inner_text("#error") == "Not found" and "no longer in the gradebook" in page.inner_text("body")
    page.click("text=Back to the class")
    assert page.locator("#students tbody tr").count() == 4
    page.fill("#search", "nobody-here")  # a search that finds no one says so
    assert page.locator("#none").is_visible() and page.inner_text("#shown") == "0 shown"
    page.fill("#search", "")
    assert not page.locator("#none").is_visible()
    total = page.locator("#students thead th", has_text="Total")
    total.click()  # sorted, and the header says which way
    assert total.get_attribute("aria-sort") == "ascending"
    scores = page.locator("#students tbody td:nth-child(2)").evaluate_all(
        "cs => cs.map(c => parseFloat(c.getAttribute('data-value')))")
    assert scores == sorted(scores)
    total.focus()
    page.keyboard.press("Enter")  # from the keyboard too
    assert total.get_attribute("aria-sort") == "descending"
    assert page.eval_on_selector("#students thead th[aria-sort]", "e => getComputedStyle(e, '::after').content") \
        == '" ▼"'


def test_a_double_submit_records_once_and_says_saving(browser, served):
    """An impatient second click while the pages are re-drawn: one override, and the TA is told it is on its way
    (not, from their own first click, that "another TA changed this task")."""
    out, url = served
    page = browser.new_page()
    page.goto(url)
    page.click("text=bob")
    rows = len(audit(out))
    page.click("#override-1c summary")
    form = page.locator("#task-1c form.override")
    form.locator("input[name=points]").fill("3")
    form.locator("input[name=reason]").fill("double click")
    said = form.evaluate("f => { const b = f.querySelector('button[value=set]'), kept = []; "
                         "f.addEventListener('submit', e => kept.push(e.defaultPrevented)); "
                         "f.requestSubmit(b); const s = f.querySelector('.saving'); f.requestSubmit(b); "
                         "return {sent: kept, saying: s && !s.hidden ? s.textContent : null}; }")
    assert said["sent"] == [False, True]  # the second is not sent
    assert "Saving" in said["saying"]
    page.locator("#task-1c .flash").wait_for()
    assert "Task 1c: set to 3 of" in page.inner_text("#task-1c .flash.ok")
    assert [r[:5] for r in audit(out)[rows:]] == [("bob", "1c", "set", 3.0, "double click")]
    page.go_back()  # back to the form (the browser's cache): it submits again, once
    form = page.locator("#task-1c form.override")
    assert form.locator(".saving").is_hidden()
