"""The public API: everything the CLI does, as functions that never print.

``grade_batch`` (a class, into a gradebook and reports), ``render_reports``
(pages again, from the gradebook alone), ``export`` (CSV, Gradescope, JUnit,
Markdown), ``check`` (a student's own check on public data), ``calibrate``
(thresholds from reference runs), ``build_kit`` (what students get), and the
folder conventions the commands share: reports go to
``reports/<assignment id>/``; ``find_gradebook`` and ``find_assignment`` find
what a command was not told.
"""
from __future__ import annotations

import os
from pathlib import Path

from .calibrate import calibrate
from .check import check
from .errors import FatalError, GradebookError
from .export import export
from .kit import build_kit
from .pipeline import grade_batch, render_reports
from .spec import load_assignment
from .store import DEFAULT_NAME

REPORTS = Path("reports")
KIT_FOLDER = Path("grader-kit")
ASSIGNMENT_ENV = "GRADER_ASSIGNMENT"


def default_out_dir(assignment_dir) -> Path:
    """Where a class's reports and gradebook go by default: ``reports/<assignment id>``."""
    return REPORTS / load_assignment(assignment_dir).id


def find_gradebook(out_dir: Path, assignment_id: str | None = None) -> Path:
    """The folder holding the gradebook: ``out_dir`` itself, or the one ``out_dir/<assignment>/`` that has one
    (``assignment_id`` chooses among several).  Never creates anything."""
    out_dir = Path(out_dir)
    if (out_dir / DEFAULT_NAME).is_file():
        return out_dir
    inside = sorted(p.parent for p in out_dir.glob(f"*/{DEFAULT_NAME}"))
    if assignment_id is not None:
        inside = [p for p in inside if p.name == assignment_id]
    if len(inside) == 1:
        return inside[0]
    if not inside:
        raise GradebookError(f"no gradebook in {out_dir} or in a folder of it (expected {out_dir / DEFAULT_NAME} "
                             f"or {out_dir}/<assignment>/{DEFAULT_NAME}); run `grader grade` first, or give --out "
                             "or --db.")
    raise GradebookError(f"{out_dir} holds the gradebooks of {', '.join(p.name for p in inside)}: choose one with "
                         f"--out {inside[0]} (or --assignment-id).")


def export_gradebook(out_dir: Path = REPORTS, *, db_url: str | None = None, assignment_id: str | None = None,
                     to_dir: Path | None = None, formats=None) -> list[Path]:
    """``grader export``: the chosen exports of one assignment's gradebook (default: all formats, into
    ``<the gradebook's folder>/export``).  Returns the files written."""
    from .export import FORMATS
    from .store import Gradebook

    folder = find_gradebook(out_dir, assignment_id) if db_url is None else Path(out_dir)
    gradebook = Gradebook(db_url, folder)
    try:
        ids = gradebook.assignment_ids()
        if assignment_id is None:
            if len(ids) != 1:
                raise GradebookError(f"the gradebook holds {len(ids)} assignments ({', '.join(ids) or 'none'}); "
                                     "choose one with --assignment-id.")
            assignment_id = ids[0]
        elif assignment_id not in ids:
            raise GradebookError(f"the gradebook has no assignment {assignment_id!r} (it has: "
                                 f"{', '.join(ids) or 'none'}).")
        return export(gradebook, assignment_id, Path(to_dir) if to_dir else folder / "export",
                      tuple(formats) if formats else FORMATS)
    finally:
        gradebook.close()


def find_assignment(near: Path | None = None) -> Path:
    """The assignment a student's ``check`` is about when not told: ``$GRADER_ASSIGNMENT``; a kit in the
    submission's folder or above it; the only kit under ``./grader-kit/``; the only assignment under
    ``./reference/``.  Raises ``FatalError`` saying what to give when none or several are found."""
    if os.environ.get(ASSIGNMENT_ENV):
        return Path(os.environ[ASSIGNMENT_ENV])
    if near is not None:
        start = Path(near).resolve()
        for folder in [start if start.is_dir() else start.parent, *(start.parents)]:
            if (folder / "assignment.toml").is_file():
                return folder
    for base in (KIT_FOLDER, Path("reference")):
        found = sorted(p.parent for p in base.glob("*/assignment.toml"))
        if len(found) == 1:
            return found[0]
        if found:
            raise FatalError(f"which assignment? {base}/ holds {', '.join(p.name for p in found)}: give one with "
                             f"--assignment {found[0]}.")
    raise FatalError("which assignment? No student kit was found (grader-kit/<assignment>/ or an assignment.toml "
                     "beside your work): give it with --assignment <the kit folder your course gave you>.")


__all__ = ["build_kit", "calibrate", "check", "default_out_dir", "export", "export_gradebook", "find_assignment",
           "find_gradebook", "grade_batch", "render_reports"]
