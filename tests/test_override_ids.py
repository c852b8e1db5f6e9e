"""`grader override` on the command line refuses what no id it is given may hold, as the manual CI run does
(one check, ``grader.ci.inputs``): a new line, an escape, a NUL, a bidirectional control, an id padded with
spaces; and ids no student or task of the gradebook has.  Each is refused with a message naming the input,
exit status 2, and nothing written.  A student whose folder name holds an escape is overridden by the id as
the reports show it.  A real class graded by the real `grader grade`; the real CLI (a subprocess, or
click's CliRunner for a NUL, which no command line can carry)."""
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import ROOT, TUTORIAL6

DEMO = ROOT / "submissions" / "tutorial6"
SECRET = "override-ids-secret-" + "4e1d" * 8
#: a student who named her folder with an escape sequence (red text) in it
HOSTILE = "mal\x1b[31mlory"


def grader(*args, cwd=None):
    import os

    env = dict(os.environ, GRADER_SECRET=SECRET)
    return subprocess.run([sys.executable, "-m", "grader.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=1800)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """erin and HOSTILE, each with erin's 1b, graded once by `grader grade`."""
    klass = tmp_path_factory.mktemp("class")
    for who in ("erin", HOSTILE):
        (klass / who).mkdir()
        shutil.copy(DEMO / "erin_1b.h5", klass / who / "1b.h5")
    out = tmp_path_factory.mktemp("out") / "tutorial6"
    proc = grader("grade", klass, "-a", TUTORIAL6, "-o", out, "--workers", 1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture
def out(graded, tmp_path):
    copy = tmp_path / "tutorial6"
    shutil.copytree(graded, copy)
    return copy


def trail(out) -> list[tuple[str, str, float | None]]:
    from grader.api import open_gradebook

    with open_gradebook(out) as (gradebook, aid, _):
        ids = {r["student"] for r in gradebook.override_log(aid)}
        assert ids <= {"erin", HOSTILE}
        return [(r["student"], r["task"], r["points"]) for r in gradebook.override_log(aid)]


def refused(out, *args, said: str):
    proc = grader("override", *args, "-o", out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert said in proc.stderr, proc.stderr
    assert "\x1b" not in proc.stderr and trail(out) == []


def test_a_student_id_with_a_new_line_is_refused(out):
    """A TA pastes a line of a log: the id and a second line with it."""
    refused(out, "erin\nbob", "1b", "1", "--reason", "checked",
            said="error: nothing was overridden: the student erin\\x0abob holds a new line")


def test_a_student_id_with_an_escape_sequence_is_refused(out):
    """The raw escape of a pasted terminal colour: refused, shown escaped, the way to give it said."""
    refused(out, "erin\x1b[2J", "1b", "1", "--reason", "checked",
            said="the student erin\\x1b[2J holds an escape (give a student's id as the reports show it")


def test_a_task_id_with_a_right_to_left_override_is_refused(out):
    refused(out, "erin", "\u202e1b", "1", "--reason", "checked",
            said="the task \\u202e1b holds the control character U+202E")


def test_a_reason_and_a_name_with_escapes_are_refused(out):
    """The reason and --by are kept in the gradebook and the override log: an escape in either is refused (a
    reason's line breaks are not: the gradebook keeps it on one line)."""
    refused(out, "erin", "1b", "1", "--reason", "ok\x1b]0;owned\x07", "--by", "ta\nroot",
            said="the reason holds an escape")
    refused(out, "erin", "1b", "1", "--reason", "ok", "--by", "ta\nroot",
            said="the name given with --by ta\\x0aroot holds a new line")
    proc = grader("override", "erin", "1b", "1", "--reason", "two\nlines", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert trail(out) == [("erin", "1b", 1.0)]


def test_a_student_id_with_a_nul_byte_is_refused(out):
    """No command line carries a NUL; click's runner calls the same command with one."""
    from grader.cli import main

    result = CliRunner().invoke(main, ["override", "erin\0", "1b", "1", "--reason", "checked", "-o", str(out)],
                                env={"GRADER_SECRET": SECRET})
    assert result.exit_code == 2, result.output
    assert "the student erin\\x00 holds a NUL byte" in result.output
    assert trail(out) == []


@pytest.mark.parametrize("student, task, said", [
    ("erin ", "1b", "the student erin  begins or ends with a space"),
    ("erin\u200b", "1b", "holds the control character U+200B"),
    ("Erin", "1b", "the gradebook has no result for a student 'Erin' in tutorial6"),
    ("../erin", "1b", "the gradebook has no result for a student '../erin' in tutorial6"),
    ("erin", "1B", "tutorial6 has no task '1B'"),
    ("x" * 201, "1b", "the student is 201 characters long (at most 200)"),
])
def test_ids_no_student_or_task_has_are_refused(out, student, task, said):
    refused(out, student, task, "1", "--reason", "checked", said=said)


def test_a_student_whose_folder_name_holds_an_escape_is_overridden_as_the_reports_show_her(out):
    """Her raw id is refused on the command line; the id as her page and the terminal show it is hers."""
    refused(out, HOSTILE, "1b", "2", "--reason", "checked", said="holds an escape")
    shown = HOSTILE.replace("\x1b", "\\x1b")
    proc = grader("override", shown, "1b", "2", "--reason", "checked", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr
    assert trail(out) == [(HOSTILE, "1b", 2.0)]
