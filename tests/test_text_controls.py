"""Bidirectional controls (U+202E) and ESC from students never reach a page, an export or the terminal raw.

One real batch through the command line (``grader grade``, then ``grader export`` and ``grader review
--json``): a student whose id, file name and notebook error hold U+202E and ESC, and a control student.
Every file written and everything printed is then read for raw control or bidirectional characters; the
student's page shows them as visible escapes (``\\u202e``), and the data files read back unchanged.
"""
import json
import os
import re
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT, TUTORIAL6, small_model
from grader.execute.sandbox import bwrap_path

pytestmark = pytest.mark.slow  # a whole batch with a notebook (also in conftest.SLOW_MODULES)

GRADER = [sys.executable, "-m", "grader.cli"]
#: what must never be written raw: C0 controls but tab, newline (and CR in a CSV's line ends), DEL, C1,
#: and the bidirectional marks, embeddings, overrides and isolates
RAW = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

HOSTILE_ID = "eve\u202egnp.exe\x1b[2J\u2066x"
HOSTILE_FILE = "2a \u202e\x1b[31mred.h5"  # not a model: its name is part of the message about it
NOTEBOOK_ERROR = "raise ValueError('cell says \\u202eevil\\x1b[31m red \\u200f\\x85')"


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    if not bwrap_path():
        pytest.skip("bubblewrap is not installed (.ci/run installs it)")
    root = tmp_path_factory.mktemp("controls")
    subs, out = root / "submissions", root / "out"
    (subs / HOSTILE_ID).mkdir(parents=True)
    (subs / HOSTILE_ID / HOSTILE_FILE).write_text("not a model")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_ERROR)]),
                   subs / HOSTILE_ID / "work.ipynb")
    (subs / "control").mkdir()
    small_model().save(subs / "control" / "2a.h5")
    env = {k: v for k, v in os.environ.items() if k != "GRADER_SECRET"}
    runs = [subprocess.run(GRADER + args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
            for args in (["grade", str(subs), "-a", str(TUTORIAL6), "-o", str(out)],
                         ["export", "-o", str(out)],
                         ["review", "-o", str(out), "--json"])]
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    return out, runs


def _written(out):
    """Every text file the batch and the exports wrote (not the gradebook's database, not the plots)."""
    return [p for p in out.rglob("*") if p.is_file() and p.suffix in (".html", ".json", ".xml", ".csv", ".md")]


def test_no_raw_control_or_bidi_character_in_any_page_or_export(batch):
    out, _ = batch
    files = _written(out)
    names = {p.name for p in files}
    assert {"index.html", "results.json", "grades.csv", "junit.xml", "summary.md"} <= names
    assert len([p for p in files if p.parent.parent.name == "gradescope"]) == 2
    assert len(list((out / "students").glob("*.html"))) == 2
    for path in files:
        text = path.read_text(encoding="utf-8")
        found = RAW.findall(text)
        assert not found, f"{path.relative_to(out)} holds raw {[hex(ord(c)) for c in found]}"


def test_the_terminal_gets_no_raw_control_either(batch):
    _, runs = batch
    for run in runs:
        assert not RAW.findall(run.stdout + run.stderr), run.args
    review = json.loads(runs[2].stdout)  # JSON's own escapes: the ids read back as they are
    assert review["assignment"] == "tutorial6"


def test_the_student_page_shows_the_controls_as_escapes(batch):
    out, _ = batch
    results = {s["id"]: s for s in json.loads((out / "results.json").read_text())["students"]}
    assert set(results) == {HOSTILE_ID, "control"}  # data files keep the id exactly (JSON escapes)
    page = next(p for p in (out / "students").glob("*.html") if p.stem != "control").read_text(encoding="utf-8")
    assert "eve\\u202egnp.exe\\x1b[2J\\u2066x" in page  # the id, as escapes a reader sees
    assert "2a \\u202e\\x1b[31mred.h5" in page  # the file name in its message
    assert "cell says \\u202eevil\\x1b[31m red \\u200f" in page  # the notebook's error text


def test_every_export_shows_the_hostile_text_as_escapes(batch):
    out, _ = batch
    export = out / "export"
    assert "eve\\u202egnp.exe\\x1b[2J\\u2066x" in (export / "grades.csv").read_text(encoding="utf-8")
    junit = (export / "junit.xml").read_text(encoding="utf-8")
    assert 'name="eve\\u202egnp.exe\\x1b[2J\\u2066x"' in junit and "\\u202e\\x1b[31mred.h5" in junit
    gradescope = [json.loads(p.read_text()) for p in (export / "gradescope").glob("*/results.json")]
    outputs = " ".join(t["output"] for g in gradescope for t in g["tests"])
    assert "2a \\u202e\\x1b[31mred.h5" in outputs  # what Gradescope shows: the escape, not the override
    assert "eve\\u202egnp.exe" in (export / "summary.md").read_text(encoding="utf-8")
