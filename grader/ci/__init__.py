"""Continuous-integration templates shipped with grader (``grader workflow``).

``workflow_text(assignment)`` is the GitHub Actions template with the assignment
folder and its pinned SHA-256 (``spec.assignment_digest``) filled in, so that a
run grades with no assignment folder but the one the TA pinned, and with the
versions its calibration recorded as pip's constraints (``GRADER_CONSTRAINTS``).
"""
from __future__ import annotations

import re
import subprocess
from importlib import resources
from pathlib import Path

TEMPLATE = "github-workflow.yml"


def template() -> str:
    return resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")


def workflow_text(assignment: Path | None = None, *, repo_root: Path | None = None) -> tuple[str, str | None]:
    """The workflow, with ``ASSIGNMENT`` (the folder as a path from ``repo_root``, default the current folder)
    and ``GRADER_ASSIGNMENT_SHA256`` set from ``assignment`` when given; returns ``(text, the hash or None)``."""
    text = template()
    if assignment is None:
        return text, None
    from ..spec import assignment_digest, load_assignment

    constraints = calibrated_constraints(load_assignment(assignment))  # TOML only: nothing of it is imported
    digest = assignment_digest(assignment)
    folder = Path(assignment).resolve()
    try:
        shown = folder.relative_to((repo_root or Path.cwd()).resolve()).as_posix()
    except ValueError:
        shown = folder.as_posix()
    text, n = re.subn(r"(?m)^(  ASSIGNMENT: )\S+", lambda m: m.group(1) + shown, text, count=1)
    text, k = re.subn(r'(?m)^(  GRADER_ASSIGNMENT_SHA256: )"[^"]*"', lambda m: f'{m.group(1)}"{digest}"', text,
                      count=1)
    text, c = re.subn(r'(?m)^(  GRADER_CONSTRAINTS: )"[^"]*"', lambda m: f'{m.group(1)}"{constraints}"', text, count=1)
    assert n == k == c == 1, "the template lost its ASSIGNMENT, GRADER_ASSIGNMENT_SHA256 or GRADER_CONSTRAINTS line"
    return text, digest


def calibrated_constraints(assignment) -> str:
    """pip's constraints (``keras==3.15.1 jax==0.10.2 ...``) for the versions of what grades depend on that the
    assignment's calibration recorded (``versions.GRADING_PACKAGES``); empty when it recorded none."""
    from packaging.version import InvalidVersion, Version

    from .. import versions
    from ..errors import FatalError

    pins = []
    for name, version in sorted((assignment.calibrated_versions or {}).items()):
        if name not in versions.GRADING_PACKAGES:
            continue  # python: the workflow's setup-python
        try:
            Version(version)
        except InvalidVersion:
            raise FatalError(f"{assignment.calibration_path}: {name}'s recorded version {version!r} is not a "
                             "version") from None
        pins.append(f"{name}=={version}")
    return " ".join(pins)


def untracked(assignment: Path) -> list[str]:
    """Files of the assignment folder that git does not track (a CI checkout lacks them, so its hash would
    differ from the pinned one); empty when the folder is not in a git repository."""
    from ..spec.frozen import _read_files

    try:
        done = subprocess.run(["git", "ls-files", "-z", "--", "."], cwd=assignment, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    tracked = set(done.stdout.decode("utf-8", "replace").split("\0"))
    return [name for name, _ in _read_files(Path(assignment).resolve()) if name not in tracked]
