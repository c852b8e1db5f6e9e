"""The TA's and the student's commands as the README writes them: the layout `make demo` writes, the kit."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, TEST_SECRET, TUTORIAL6


def grader(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "grader.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "GRADER_SECRET": TEST_SECRET, **(env or {})})


@pytest.fixture(scope="module")
def graded(tmp_path_factory, model_dir):
    """A class graded with the defaults, as `make demo` does: reports/<assignment>/."""
    work = tmp_path_factory.mktemp("ta")
    for sid, tid in (("alice", "2a"), ("bob", "1c")):
        (work / "subs" / sid).mkdir(parents=True)
        shutil.copy(model_dir / f"{tid}.h5", work / "subs" / sid / f"{tid}.h5")
    done = grader("grade", "subs", "-a", TUTORIAL6, "--workers", "1", cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "reports" / "tutorial6" / "gradebook.sqlite").is_file()
    return work


def test_report_and_export_work_with_the_defaults_after_grading(graded):
    done = grader("report", "-a", TUTORIAL6, cwd=graded)
    assert done.returncode == 0, done.stderr
    done = grader("export", cwd=graded)
    assert done.returncode == 0, done.stderr
    rows = (graded / "reports" / "tutorial6" / "export" / "grades.csv").read_text().splitlines()
    assert rows[0].startswith("student_id") and {r.split(",")[0] for r in rows[1:]} == {"alice", "bob"}


def test_export_with_the_defaults_exports_every_assignment_under_reports(graded, tmp_path):
    """make demo writes reports/tutorial6 and reports/coursework: a bare `grader export` does both."""
    work = tmp_path / "two"
    shutil.copytree(graded / "reports", work / "reports")
    shutil.copytree(work / "reports" / "tutorial6", work / "reports" / "copy")
    done = grader("export", cwd=work)
    assert done.returncode == 0, done.stderr
    for name in ("tutorial6", "copy"):
        assert (work / "reports" / name / "export" / "grades.csv").is_file()


def test_reading_commands_create_no_gradebook(tmp_path):
    done = grader("report", "-a", TUTORIAL6, "-o", tmp_path / "nothing", cwd=tmp_path)
    assert done.returncode == 2 and "no gradebook" in done.stderr
    done = grader("export", "-o", tmp_path / "nothing", cwd=tmp_path)
    assert done.returncode == 2 and "no gradebook" in done.stderr
    assert not (tmp_path / "nothing").exists()


def test_a_kit_has_no_answers_and_check_finds_it_and_agrees(tmp_path, model_dir):
    done = grader("kit", TUTORIAL6, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    kit = tmp_path / "grader-kit" / "tutorial6"
    names = sorted(p.name for p in kit.iterdir())
    assert "solution.py" not in names and "solution.ipynb" not in names and "make_demo.py" not in names
    text = (kit / "calibration.toml").read_text()
    assert "seeds =" not in text and "heldout_secret" not in text and "reference_seed" not in text
    work = tmp_path / "mine"
    work.mkdir()
    shutil.copy(model_dir / "2a.h5", work / "2a.h5")
    shutil.copy(model_dir / "1c.h5", work / "1c.h5")
    with_kit = grader("check", work, "--out", tmp_path / "c1", cwd=tmp_path)  # found without -a
    with_ta = grader("check", work, "-a", TUTORIAL6, "--out", tmp_path / "c2", cwd=tmp_path)
    assert with_kit.returncode == with_ta.returncode == 1  # tasks missing: not ready to submit
    verdicts = [[line for line in run.stderr.splitlines() if line.lstrip().startswith(("✓", "~", "✗", "!"))]
                for run in (with_kit, with_ta)]
    assert verdicts[0] and verdicts[0] == verdicts[1]


def test_check_says_which_assignment_when_it_cannot_tell(tmp_path, model_dir):
    (tmp_path / "reference").mkdir()
    for name in ("a1", "a2"):
        shutil.copytree(TUTORIAL6, tmp_path / "reference" / name)
    shutil.copy(model_dir / "2a.h5", tmp_path / "2a.h5")
    done = grader("check", tmp_path / "2a.h5", cwd=tmp_path)
    assert done.returncode == 2 and "which assignment?" in done.stderr and "a1, a2" in done.stderr
