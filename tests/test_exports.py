"""Exports an LMS maps once: grades.csv keeps the same columns whatever happens to the class (an override
included), every row's total is explained by its own columns (the optional tasks' cap too), `grader override`
writes the exports in their default folder again, and they are where the README says
(reports/<assignment>/export/), on a class of real Keras models graded for real."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TUTORIAL6
from grader.export import CSV_COLUMNS

DEMO = ROOT / "submissions" / "tutorial6"
SECRET = "test-exports-" + "7c1d" * 12


def grader(*args, cwd: Path):
    return subprocess.run([sys.executable, "-m", "grader.cli", *[str(a) for a in args]], cwd=cwd,
                          env=dict(os.environ, GRADER_SECRET=SECRET), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A course folder whose class (alice, with an optional task above the maximum; bob; erin, one task) was
    graded with the defaults: the reports in reports/tutorial6/."""
    course = tmp_path_factory.mktemp("course")
    for who in ("alice", "bob"):
        shutil.copytree(DEMO / who, course / "class" / who)
    (course / "class" / "erin").mkdir()
    shutil.copy(DEMO / "erin_1b.h5", course / "class" / "erin" / "1b.h5")
    done = grader("grade", "class", "-a", TUTORIAL6, "--workers", 2, cwd=course)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (course / "reports" / "tutorial6" / "gradebook.sqlite").is_file()
    return course


@pytest.fixture
def course(graded, tmp_path) -> Path:
    """A copy of the graded course folder, for a test that changes it."""
    shutil.copytree(graded, tmp_path / "course")
    return tmp_path / "course"


def read_csv(path: Path) -> tuple[list[str], dict[str, dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = {r["student_id"]: r for r in reader}
        return list(reader.fieldnames), rows


def task_ids() -> list[str]:
    from grader.spec import load_assignment

    return [t.id for t in load_assignment(TUTORIAL6).tasks]


def test_exports_go_where_the_readme_says(course):
    done = grader("export", cwd=course)
    assert done.returncode == 0, done.stderr
    export = course / "reports" / "tutorial6" / "export"
    assert {p.name for p in export.iterdir()} == {"grades.csv", "gradescope", "junit.xml", "summary.md"}
    readme = (ROOT / "README.md").read_text()
    assert "reports/<assignment>/export/" in readme and "reports/export/" not in readme


def test_grades_csv_has_the_same_columns_before_and_after_an_override(course):
    assert grader("export", "--format", "csv", cwd=course).returncode == 0
    grades = course / "reports" / "tutorial6" / "export" / "grades.csv"
    before, rows = read_csv(grades)
    assert before == ["student_id", *[f"task_{t}" for t in task_ids()], *CSV_COLUMNS]
    assert rows["bob"]["overridden"] == ""  # present before any override, empty
    done = grader("override", "bob", "1c", 8, "--reason", "right model, saved under another name", cwd=course)
    assert done.returncode == 0, done.stderr[-3000:]
    after, rows = read_csv(grades)  # written again by the override
    assert after == before
    assert (rows["bob"]["task_1c"], rows["bob"]["overridden"]) == ("8", "1c")


def test_every_total_is_explained_by_its_row(graded, tmp_path):
    done = grader("export", "--to", tmp_path / "export", "--format", "csv", cwd=graded)
    assert done.returncode == 0, done.stderr
    _, rows = read_csv(tmp_path / "export" / "grades.csv")
    results = {s["id"]: s for s in json.loads((graded / "reports" / "tutorial6" / "results.json").read_text())
               ["students"]}
    assert set(rows) == {"alice", "bob", "erin"}
    for sid, row in rows.items():
        tasks = [float(row[f"task_{t}"] or 0) for t in task_ids()]
        tasks_sum, capped, total, max_score = (float(row[k]) for k in ("tasks_sum", "capped", "total", "max_score"))
        assert tasks_sum == pytest.approx(sum(tasks), abs=0.011), sid  # the task columns add up to tasks_sum
        assert total == pytest.approx(tasks_sum - capped, abs=0.011), sid  # the cap is the only difference
        assert total <= max_score and (capped == 0 or total == max_score), sid
        assert total == results[sid]["score"] and max_score == results[sid]["max_score"]  # what the pages say
    alice = rows["alice"]
    assert float(alice["tasks_sum"]) > float(alice["max_score"]) and float(alice["capped"]) > 0  # the cap, shown


def test_an_override_writes_every_export_of_the_default_folder_again(course):
    assert grader("export", cwd=course).returncode == 0
    export = course / "reports" / "tutorial6" / "export"
    done = grader("override", "erin", "1c", 4, "--reason", "1c was handed in by mail", cwd=course)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Wrote the exports in {Path('reports') / 'tutorial6' / 'export'} again" in done.stderr
    erin = json.loads((export / "gradescope" / "erin" / "results.json").read_text())
    assert next(t for t in erin["tests"] if t["number"] == "1c")["score"] == 4 and erin["score"] >= 4
    assert "overridden on review" in (export / "junit.xml").read_text()
    assert "✎" in (export / "summary.md").read_text()
    assert read_csv(export / "grades.csv")[1]["erin"]["task_1c"] == "4"
    # and an export folder the TA never asked for is not made
    shutil.rmtree(export)
    done = grader("override", "erin", "1c", 5, "--reason", "1c, looked at again", cwd=course)
    assert done.returncode == 0 and not export.exists() and "Wrote the exports" not in done.stderr


def test_the_exported_results_json_is_the_one_the_gradescope_run_writes(course):
    """One writer of Gradescope's results.json (``export.gradescope_results``): the export has the run's schema
    (HTML feedback, every test's fields) and the export's override marks."""
    from test_gradescope import TEST, TOP

    assert grader("export", cwd=course).returncode == 0
    done = grader("override", "erin", "1c", 4, "--reason", "1c was handed in by mail", cwd=course)
    assert done.returncode == 0, done.stderr[-3000:]
    erin = json.loads((course / "reports" / "tutorial6" / "export" / "gradescope" / "erin" / "results.json")
                      .read_text())
    assert TOP - {"execution_time"} <= set(erin) and erin["output_format"] == "html" and "<table>" in erin["output"]
    assert all(TEST - {"execution_time"} <= set(t) and t["output_format"] == "html" for t in erin["tests"])
    one_c = next(t for t in erin["tests"] if t["number"] == "1c")
    assert "overridden" in one_c["tags"] and "scored on review by a TA" in erin["output"]
