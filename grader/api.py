"""The public API: everything the CLI does, as functions that never print.

``grade_batch`` (a class, into a gradebook and reports), ``render_reports``
(pages again, from the gradebook alone), ``export`` (CSV, Gradescope, JUnit,
Markdown), ``override_score`` (a TA's score for a task, with the reason),
``review_gradebook`` (what needs a human), ``check`` (a student's own check on public data), ``calibrate``
(thresholds from reference runs), ``build_kit`` (what students get), and the
folder conventions the commands share: reports go to
``reports/<assignment id>/``; ``find_gradebook`` and ``find_assignment`` find
what a command was not told.  ``Events`` (a check's: ``CheckEvents``) is how they tell their caller what
happens as it happens.
"""
from __future__ import annotations

import getpass
import importlib
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

from .errors import FatalError, GradebookError
from .pipeline import grade_batch, render_reports
from .session import Events
from .spec import load_assignment
from .store import DEFAULT_NAME

#: the API's functions that live in modules of their own, imported when first asked for: a command imports what
#: it runs (``grade`` does not wait for calibration's or the student check's imports before its first kernel)
_ELSEWHERE = {"calibrate": ".calibrate", "check": ".check", "CheckEvents": ".check", "export": ".export", "build_kit": ".kit"}


def __getattr__(name: str):
    if name in _ELSEWHERE:
        value = getattr(importlib.import_module(_ELSEWHERE[name], __package__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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


@contextmanager
def open_gradebook(out_dir: Path = REPORTS, *, db_url: str | None = None, assignment_id: str | None = None):
    """The gradebook an existing class's command works on, found as ``grader export`` finds it: yields
    ``(gradebook, assignment id, the gradebook's folder)``, and closes it after.  ``assignment_id`` chooses
    among several assignments (the only one by default)."""
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
        yield gradebook, assignment_id, folder
    finally:
        gradebook.close()


def export_gradebook(out_dir: Path = REPORTS, *, db_url: str | None = None, assignment_id: str | None = None,
                     to_dir: Path | None = None, formats=None) -> list[Path]:
    """``grader export``: the chosen exports of one assignment's gradebook (default: all formats, into
    ``<the gradebook's folder>/export``).  With neither ``assignment_id`` nor ``db_url``, and ``out_dir``
    holding the gradebooks of several assignments (``reports/<assignment>/``, as ``make demo`` writes),
    each is exported into its own folder.  Returns the files written."""
    from .export import FORMATS, export

    several = sorted(p.parent.name for p in Path(out_dir).glob(f"*/{DEFAULT_NAME}"))
    if db_url is None and assignment_id is None and to_dir is None and len(several) > 1 \
            and not (Path(out_dir) / DEFAULT_NAME).is_file():
        return [path for name in several for path in export_gradebook(Path(out_dir) / name, formats=formats)]
    with open_gradebook(out_dir, db_url=db_url, assignment_id=assignment_id) as (gradebook, assignment_id, folder):
        return export(gradebook, assignment_id, Path(to_dir) if to_dir else folder / "export",
                      tuple(formats) if formats else FORMATS)


def os_user() -> str:
    """Who is at the keyboard, for the audit trail: the OS user's name (its uid when it has none)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def _assignment_for_pages(gradebook, assignment_id: str, folder: Path, assignment_dir: Path | None):
    """What re-drawing a class's pages needs: ``(the folder they are in, the assignment, why not)``.  The folder
    is the gradebook's or its ``<assignment>/`` (with ``--db``); the assignment is ``assignment_dir`` (which must
    be right: a ``FatalError`` when not) or the folder the class was last graded from (when it still loads)."""
    pages = next((f for f in (folder, folder / assignment_id) if (f / "results.json").is_file()), None)
    if pages is None:
        return None, None, f"no results.json in {folder} or {folder / assignment_id}"
    if assignment_dir is not None:
        assignment = load_assignment(assignment_dir)
        if assignment.id != assignment_id:
            raise FatalError(f"{assignment_dir} is the assignment {assignment.id!r}, not {assignment_id!r}.")
        return pages, assignment, None
    spec = gradebook.spec_folder(assignment_id)
    if spec is None:
        return pages, None, "the gradebook does not say which assignment folder it was graded from"
    try:
        assignment = load_assignment(spec)
    except FatalError as e:
        return pages, None, f"the assignment folder {spec} cannot be loaded ({e.explain()})"
    if assignment.id != assignment_id:
        return pages, None, f"{spec} is now the assignment {assignment.id!r}"
    return pages, assignment, None


def override_score(student_id: str, task_id: str, points: float | None, *, reason: str | None, by: str | None = None,
                   out_dir: Path = REPORTS, db_url: str | None = None, assignment_id: str | None = None,
                   assignment_dir: Path | None = None, wait: float = 0.0, expected_version: str | None = None) -> dict:
    """``grader override``: set a task's score by hand (``points``; None undoes the override in force) with
    the reason and who did it (``by``, default the OS user), then re-draw the class's ``results.json``,
    ``index.html`` and the student's page.  The pages need the assignment folder: ``assignment_dir``, or the
    one the gradebook was last graded from.  The exports in the default folder (``<the gradebook's
    folder>/export``) are written again.  Returns ``{"task": the task as it now stands, "assignment": its
    id, "redrawn": the folder re-drawn or None, "why_not": why not, "exported": the export folder written
    again or None}``.  ``expected_version``: the task's ``Gradebook.task_version`` the decision was made on
    (``grader serve``'s forms): a task changed since is refused (``ChangedSince``)."""
    from .pipeline import refresh_reports
    from .store import OutputLock

    with open_gradebook(out_dir, db_url=db_url, assignment_id=assignment_id) as (gradebook, assignment_id, folder):
        pages, assignment, why_not = _assignment_for_pages(gradebook, assignment_id, folder, assignment_dir)
        # one writer per output folder: a running batch would write the pages over again without the override
        with OutputLock(pages, wait=wait) if pages is not None else nullcontext():
            student_id = _stored_student(gradebook, assignment_id, student_id)
            task = gradebook.override(assignment_id, student_id, task_id, points, reason=reason, by=by or os_user(),
                                      expected=expected_version)
            if assignment is not None:
                refresh_reports(assignment, pages, gradebook, pages=[student_id])
            exported = _refresh_exports(gradebook, assignment_id, folder / "export")
    return {"task": task, "assignment": assignment_id, "redrawn": pages if assignment is not None else None,
            "why_not": why_not, "exported": folder / "export" if exported else None}


def _stored_student(gradebook, assignment_id: str, student_id: str) -> str:
    """The gradebook's id for ``student_id``: itself, or the one student whose id the reports show as it (a
    folder name with an escape, given as ``mal\\x1blory``: a TA cannot type, nor `grader override` take, the raw
    character)."""
    from .textsafe import visible

    ids = gradebook.state(assignment_id)
    if student_id in ids:
        return student_id
    shown = [sid for sid in ids if visible(sid).replace("\t", "\\x09").replace("\n", "\\x0a") == student_id]
    return shown[0] if len(shown) == 1 else student_id


def _refresh_exports(gradebook, assignment_id: str, to: Path) -> list[Path]:
    """Write again the exports ``grader export`` left in ``to`` (its default folder), each format that is
    there, so that none is older than the gradebook; returns the files written."""
    from .export import FORMATS, export

    present = [name for name, fmt in FORMATS.items() if (to / fmt.target).exists()]
    return export(gradebook, assignment_id, to, tuple(present)) if present else []


def review_gradebook(out_dir: Path = REPORTS, *, db_url: str | None = None, assignment_id: str | None = None,
                     near: float | None = None) -> dict:
    """``grader review``: what needs a human in one assignment's gradebook (``review.review_items``):
    ``{"assignment", "near_threshold", "items", "identical", "not_fingerprinted"}``; the last lists the
    students recorded before identical work was looked for (``grader grade`` fills them in)."""
    from .review import NEAR_THRESHOLD, identical_work, review_items

    near = NEAR_THRESHOLD if near is None else near
    with open_gradebook(out_dir, db_url=db_url, assignment_id=assignment_id) as (gradebook, assignment_id, _):
        identities = gradebook.identities(assignment_id)
        identical = identical_work(identities)
        items = review_items(gradebook.results(assignment_id), identical, near)
    return {"assignment": assignment_id, "near_threshold": near, "items": items, "identical": identical,
            "not_fingerprinted": sorted(sid for sid, identity in identities.items() if identity is None)}


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


__all__ = ["CheckEvents", "Events", "build_kit", "calibrate", "check", "default_out_dir", "export", "export_gradebook", "find_assignment",
           "find_gradebook", "grade_batch", "open_gradebook", "os_user", "override_score", "render_reports",
           "review_gradebook"]
