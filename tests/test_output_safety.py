"""Hostile student ids and messages reach every reader inert: spreadsheets, XML parsers, Markdown and HTML,
file systems, terminals; and what the grader writes is readable by its owner only.

A student chooses their id (the name of their folder) and, through file names, part of their messages. One
class of such students is graded by the real pipeline and exported from the real gradebook; each test
looks at what its own hostile students became."""
import csv
import html
import io
import json
import re
import stat
import xml.etree.ElementTree as ET

import pytest

from conftest import TUTORIAL6, small_model
from grader.textsafe import visible

#: ids a spreadsheet would evaluate (a folder name holds no "/", hence "-c" for cmd's "/C")
FORMULAS = ['=HYPERLINK("evil.example","click")', "+cmd|' -c calc'!A0", "@SUM(1)", "-2+3", "\tTAB"]
ESCAPE_ID = "esc\x1b[31mred\x01\x7f"
#: a file name is part of the message about it: this student's 2a.h5 is not a model
MESSAGE_STUDENT, MESSAGE_FILE = "mallory", "2a \x1b[2J<img src=x onerror=alert(1)>|*x*.h5"
HTML_ID = "<img src=x onerror=alert(1)>"
MARKDOWN_ID = "a|b*c_[d](e)`f`"
#: pairs that the old file names merged: (the one with a 2a model, the one with a 2b model)
#: the first alice's а is Cyrillic; Bob and bob are one file name on a disk that ignores case (macOS, Windows)
LOOKALIKES = [("x y", "x_y"), ("\u0430lice", "alice"), ("Bob", "bob")]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The hostile class, graded in one batch and exported: (output folder, export folder, results by id)."""
    from grader.export import export
    from grader.pipeline import grade_batch
    from grader.store import Gradebook

    root = tmp_path_factory.mktemp("hostile")
    subs, out = root / "submissions", root / "out"
    model = small_model()
    for sid in [*FORMULAS, ESCAPE_ID, HTML_ID, MARKDOWN_ID] + [a for a, _ in LOOKALIKES]:
        (subs / sid).mkdir(parents=True)
        model.save(subs / sid / "2a.h5")
    for _, sid in LOOKALIKES:  # another task: another score, so a lost result would show
        (subs / sid).mkdir(parents=True)
        model.save(subs / sid / "2b.h5")
    (subs / MESSAGE_STUDENT).mkdir()
    (subs / MESSAGE_STUDENT / MESSAGE_FILE).write_text("not a model")
    grade_batch(subs, TUTORIAL6, out)
    results = {s["id"]: s for s in json.loads((out / "results.json").read_text())["students"]}
    gradebook = Gradebook(None, out)
    try:
        export(gradebook, "tutorial6", out / "export")
    finally:
        gradebook.close()
    return out, out / "export", results


def test_formula_ids_are_text_in_grades_csv(graded):
    _, exported, results = graded
    with open(exported / "grades.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    ids = [r["student_id"] for r in rows]
    for sid in FORMULAS:
        assert "'" + sid in ids  # shown as the text it is, never evaluated
    for row in rows:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row.values())
        sid = row["student_id"].removeprefix("'")
        shown = {visible(k): v for k, v in results.items()}  # a control character as its escape, never raw
        assert float(row["total"]) == shown[sid]["score"]  # the numbers we write stay numbers
    assert visible(ESCAPE_ID) in ids and ESCAPE_ID not in ids


def test_junit_xml_parses_with_control_characters_in_ids_and_messages(graded):
    from junitparser import Error, JUnitXml

    _, exported, results = graded
    path = exported / "junit.xml"
    assert len(ET.parse(path).getroot().findall("testsuite")) == len(results)
    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(path))}
    assert len(suites) == len(results)  # a suite per student
    assert "esc\\x1b[31mred\\x01\\x7f" in suites  # the control characters shown, not dropped
    case = next(c for c in suites[MESSAGE_STUDENT] if c.name == "task 2a")
    error = next(r for r in case.result if isinstance(r, Error))
    assert error.text.startswith("2a \\x1b[2J<img src=x onerror=alert(1)>|*x*.h5 is not a Keras model")


def test_summary_md_carries_no_html_and_no_markdown_from_students(graded):
    _, exported, results = graded
    summary = (exported / "summary.md").read_text(encoding="utf-8")
    assert "<img" not in summary and "\x1b" not in summary
    assert "| &lt;img src=x onerror=alert(1)&gt; |" in summary
    assert "<summary>&lt;img src=x onerror=alert(1)&gt;: " in summary  # HTML there: entities, no backslashes
    assert "| a\\|b\\*c\\_\\[d\\](e)\\`f\\` |" in summary
    assert "\\x1b\\[2J&lt;img src=x onerror=alert(1)&gt;\\|\\*x\\*.h5 is not a Keras model" in summary
    table = [line for line in summary.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(results)
    cells = {len(re.split(r"(?<!\\)\|", line)) for line in table}
    assert len(cells) == 1  # every row as many cells as the header: no id opened a column


@pytest.mark.parametrize("pair", LOOKALIKES, ids=["space-underscore", "cyrillic-latin", "upper-lower-case"])
def test_ids_that_old_file_names_merged_get_their_own_page_and_gradescope_folder(graded, pair):
    out, exported, results = graded
    pages = {html.unescape(re.search(r'id="student-id">(.*?)</strong>', p.read_text()).group(1)): p
             for p in (out / "students").glob("*.html")}
    # one page per student, none overwritten by another (a control character shown as its escape)
    assert set(pages) == {visible(sid) for sid in results}
    assert visible(ESCAPE_ID) == "esc\\x1b[31mred\\x01\\x7f" and ESCAPE_ID not in pages
    links = re.findall(r'<a href="(students/[^"]+)">', (out / "index.html").read_text())
    assert sorted(out / link for link in links) == sorted(pages.values())
    folders = {p.parent.name: json.loads(p.read_text()) for p in (exported / "gradescope").glob("*/results.json")}
    assert len(folders) == len(results)
    assert sorted(f["score"] for f in folders.values()) == sorted(s["score"] for s in results.values())
    hostile, plain = (pages[sid].stem for sid in pair)
    assert plain == pair[1] and "~" in hostile  # a plain id keeps its name; the other is marked as changed
    first, second = (results[sid]["score"] for sid in pair)
    assert first != second  # different work: both scores must survive, each in its student's folder
    assert folders[hostile]["score"] == first and folders[plain]["score"] == second


def test_gradebook_results_and_exports_are_owner_only(graded, tmp_path):
    from grader.store import Gradebook

    out, exported, _ = graded
    plots = list((out / ".plots").iterdir())  # the batch's drawn plots, kept for later pages
    assert plots and stat.S_IMODE((out / ".plots").stat().st_mode) == 0o700
    for path in (out / "gradebook.sqlite", out / "results.json", out / "index.html", exported / "grades.csv",
                 exported / "junit.xml", exported / "summary.md", *plots):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    old = tmp_path / "gradebook.sqlite"  # one from before: made owner-only when opened
    old.touch(mode=0o644)
    old.chmod(0o644)
    Gradebook(None, tmp_path).close()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600


def test_terminal_text_has_no_escape_sequences_or_markup():
    from rich.console import Console

    from grader.textsafe import terminal

    shown = terminal("\x1b[2J[bold]boss[/bold]\r\u202egpj.exe\\")
    assert "\x1b" not in shown and "\r" not in shown and "\u202e" not in shown
    console = Console(file=io.StringIO(), color_system=None, width=200)
    console.print(f"[dim]{shown}[/]")  # as the grader prints it: inside its own markup
    assert console.file.getvalue() == "\\x1b[2J[bold]boss[/bold]\\x0d\\u202egpj.exe\\\n"


def test_check_prints_a_hostile_name_inert(tmp_path, monkeypatch):
    from rich.console import Console

    from grader import cli
    from grader.check import check

    folder = tmp_path / "submission"
    folder.mkdir()
    small_model().save(folder / "2a.h5")
    console = Console(file=io.StringIO(), color_system=None, width=200)
    monkeypatch.setattr(cli, "console", console)  # what grader check prints, into a string
    cli._print_check(check(folder, TUTORIAL6, name="\x1b[2J[bold]boss"))
    printed = console.file.getvalue()
    assert "\x1b" not in printed
    assert "check of \\x1b[2J[bold]boss on public validation data" in printed
