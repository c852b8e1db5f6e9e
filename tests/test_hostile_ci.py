"""Hostile environments around the student kit's `check`: what the check says about the versions it runs on
must be the versions it imports, whatever the student's machine does (its own business) to make them look
like the course's."""
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, TUTORIAL6
from grader import versions

DRIFT = ("import sys; from grader.check import version_drift; from grader.spec import load_assignment; "
         "print(version_drift(load_assignment(sys.argv[1])))")


@pytest.fixture
def kit(tmp_path):
    """An assignment folder as a kit has it, whose requirements.lock pins exactly this environment's versions."""
    folder = tmp_path / "tutorial6-kit"
    shutil.copytree(TUTORIAL6, folder, ignore=shutil.ignore_patterns("__pycache__"))
    pins = [(n, v) for n, v in versions.current().items() if n != "python"]
    (folder / "requirements.lock").write_text(versions.lock_text(pins, by="grader kit", use="a test"))
    return folder


def drift(kit, pythonpath: str) -> str:
    done = subprocess.run([sys.executable, "-c", DRIFT, str(kit)], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath}, cwd=kit.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


@pytest.mark.parametrize("module", ["h5py", "numpy"])
def test_a_package_shadowed_on_pythonpath_is_not_taken_for_the_installed_one(kit, tmp_path, module):
    """The student's PYTHONPATH holds another copy of a package grades depend on (a source checkout, an old
    vendored one): `import` takes it, while its installed metadata still says the lock's version.  The check
    said nothing, as if it ran on the course's versions; it must say which copy it imports."""
    shadow = tmp_path / "shadow"
    (shadow / module).mkdir(parents=True)
    (shadow / module / "__init__.py").write_text('__version__ = "0.0.1"\n')
    assert drift(kit, str(ROOT)) == "None"  # the control: the lock's versions, imported from where installed
    said = drift(kit, f"{shadow}:{ROOT}")
    assert said.startswith("This check runs on other versions than your course grades with")
    assert f"{module} is imported from {shadow / module}" in said


HOSTILE_GRADER = """
import os, pathlib
pathlib.Path({marker!r}).write_text("the push's grader/ ran; GRADER_SECRET=" + os.environ.get("GRADER_SECRET", ""))
raise SystemExit(3)
"""


def test_a_grader_package_pushed_to_the_working_directory_is_not_what_the_speed_probe_runs(tmp_path):
    """CI runs `grader grade` (with GRADER_SECRET) and `grader check` at the top of the checkout.  A push adds a
    folder grader/ there (checked, not graded), the next push changes only submissions/ (graded): the speed
    probe, `python -m grader.speed_probe`, put the working directory first on sys.path and imported the push's
    grader/, with the secret in its environment.  The probe must run the installed grader."""
    from grader import speed_probe

    marker = tmp_path / "ran.txt"
    checkout = tmp_path / "checkout"
    (checkout / "grader").mkdir(parents=True)
    (checkout / "grader" / "__init__.py").write_text(HOSTILE_GRADER.format(marker=str(marker)))
    (checkout / "grader" / "speed_probe.py").write_text("")
    code = "from grader import speed_probe; print(speed_probe.probe(repeats=1))"
    done = subprocess.run([sys.executable, "-P", "-c", code], cwd=checkout, capture_output=True, text=True,
                          timeout=600, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "GRADER_SECRET": "s3"})
    assert not marker.exists(), marker.read_text()
    assert done.returncode == 0 and float(done.stdout.split()[-1]) > 0, done.stderr[-3000:]
    assert speed_probe._command(1)[0][:2] == [sys.executable, "-P"]  # as the probe's own process is started


def _override_step(tmp_path, **inputs):
    from test_workflow import override_step

    return override_step(tmp_path, actor="ta-on-duty", tas="ta-on-duty", **inputs)


def test_a_student_id_with_a_new_line_is_refused_before_any_command_runs(tmp_path):
    """A TA pastes a student id that carries a new line and a workflow command (`::add-mask::`, or a second
    `grader` argument): the override step refuses it, saying which input and why, and runs no `grader`."""
    proc, called = _override_step(tmp_path, student="erin\n::add-mask::ghs-token --undo")
    assert proc.returncode == 1 and called == "", proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == [line for line in lines if line.startswith("::error::")]  # no line of the id's own
    assert "the student erin\\x0a::add-mask::ghs-token --undo holds a new line" in proc.stdout


def test_a_task_id_hundreds_of_characters_long_is_refused(tmp_path):
    proc, called = _override_step(tmp_path, task="1c" * 400)
    assert proc.returncode == 1 and called == ""
    assert "::error::Nothing was overridden: the task is 800 characters long (at most 200)" in proc.stdout


@pytest.mark.parametrize("char", ["\u0085", "\u202e", "\x1b"])
def test_a_student_id_with_a_non_ascii_or_invisible_control_character_is_refused(tmp_path, char):
    """A C1 control (NEL), a right-to-left override (it shows `erin` as a different name) or an escape in the
    id: refused, the character named, nothing run."""
    proc, called = _override_step(tmp_path, student=f"er{char}in")
    assert proc.returncode == 1 and called == ""
    assert "::error::Nothing was overridden: the student er\\" in proc.stdout
    assert f"U+{ord(char):04X}" in proc.stdout or "an escape" in proc.stdout


def test_points_that_are_not_a_number_are_refused(tmp_path):
    proc, called = _override_step(tmp_path, points="--undo")
    assert proc.returncode == 1 and called == ""
    assert "the points --undo are not a number (or 'undo')" in proc.stdout
