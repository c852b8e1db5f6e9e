"""Intake: turning a submissions folder into students and their files.

A submission is either a folder ``SUBMISSIONS/<student-id>/`` (every file in
it, at any depth) or files named ``<student-id>...`` directly in
``SUBMISSIONS`` (``alice.h5``, ``alice_1c.h5``, ``alice-task2a.keras``), which
are grouped by student id.  Formats are told by bytes (``formats``); a task is
suggested by a file name that names it (``1e.h5``, ``task_2c.keras``).
"""
from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EmptySubmission, SubmissionError, UnreadableFile
from . import formats
from .formats import FORMAT_NAMES, MODEL_FORMATS, sniff_format

IGNORED_NAMES = {"__MACOSX", ".ipynb_checkpoints", "__pycache__", ".DS_Store", "Thumbs.db", ".git"}


@dataclass
class SubmittedFile:
    path: Path
    format: str
    task_hint: str | None = None  # a task id the file name names
    relative: str = ""

    @property
    def is_model(self) -> bool:
        return self.format in MODEL_FORMATS


@dataclass
class Submission:
    student_id: str
    files: list[SubmittedFile] = field(default_factory=list)
    problems: list[SubmissionError] = field(default_factory=list)
    root: Path | None = None


def _task_pattern(names):
    alternatives = "|".join(re.escape(n.lower()) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?:^|[^a-z0-9])(?:task[ _\-]?)?({alternatives})$|"
                      rf"(?:^|[^a-z0-9])(?:task[ _\-]?)?({alternatives})(?=[^a-z0-9])")


class TaskNamer:
    """Finds the task a file name names, from the spec's task ids, names and file names."""

    def __init__(self, assignment):
        self.by_name = {}
        self.by_file = {}
        for task in assignment.tasks:
            for n in task.names:
                self.by_name[n.lower()] = task.id
            for fn in task.file_names:
                self.by_file[fn.lower()] = task.id
        self.pattern = _task_pattern(self.by_name) if self.by_name else None

    def task_for(self, filename: str) -> str | None:
        if filename.lower() in self.by_file:
            return self.by_file[filename.lower()]
        stem = Path(filename).stem.lower()
        if self.pattern is None:
            return None
        m = self.pattern.search(stem)
        if m:
            return self.by_name[m.group(1) or m.group(2)]
        return None

    def split_student(self, filename: str) -> str:
        """``alice_1c.h5`` -> ``alice``; ``alice.h5`` -> ``alice``."""
        stem = Path(filename).stem
        if self.pattern is not None:
            m = self.pattern.search(stem.lower())
            if m and m.start() > 0:
                return stem[: m.start()].rstrip(" _-.") or stem
        return stem


def _visible(path: Path) -> bool:
    return not (path.name.startswith(".") or path.name in IGNORED_NAMES)


def _sniff(path: Path, problems: list, shown: str):
    try:
        return sniff_format(path)
    except PermissionError:
        problems.append(UnreadableFile(f"{shown}: the file cannot be read (permission denied).",
                                       hint="Upload it again; if you are the TA, check its permissions."))
    except OSError as e:
        problems.append(UnreadableFile(f"{shown}: the file cannot be read ({e.strerror or e})."))
    return None


def _special(path: Path) -> str | None:
    """Why ``path`` is not a regular file or folder (a FIFO would hang a reader), or None."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a broken link (it points to nothing)"
    except OSError as e:
        return f"not readable ({e.strerror or e})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "not a regular file (a pipe, socket or device)"


def _walk(folder: Path, problems: list, base: Path):
    """Files below ``folder``, SavedModel folders as single entries."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        problems.append(UnreadableFile(f"{folder.relative_to(base.parent)}/: the folder cannot be read "
                                       f"({e.strerror or e})."))
        return
    for entry in entries:
        if not _visible(entry):
            continue
        why = _special(entry)
        if why:
            problems.append(UnreadableFile(f"{entry.relative_to(base).as_posix()}: {why}; it was skipped."))
        elif entry.is_dir():
            if (entry / "saved_model.pb").is_file():
                yield entry
            else:
                yield from _walk(entry, problems, base)
        else:
            yield entry


def collect(submissions_dir, assignment) -> list[Submission]:
    """All students found in ``submissions_dir``, sorted by id."""
    root = Path(submissions_dir)
    namer = TaskNamer(assignment)
    students: dict[str, Submission] = {}
    for entry in sorted(root.iterdir()):
        if not _visible(entry):
            continue
        why = _special(entry)
        if why:
            sid = namer.split_student(entry.name)
            students.setdefault(sid, Submission(sid)).problems.append(
                UnreadableFile(f"{entry.name}: {why}; it was skipped."))
        elif entry.is_dir() and not (entry / "saved_model.pb").is_file():
            sub = students.setdefault(entry.name, Submission(entry.name, root=entry))
            for path in _walk(entry, sub.problems, entry):
                _add(sub, path, path.relative_to(entry).as_posix(), namer)
            if not sub.files and not sub.problems:
                sub.problems.append(EmptySubmission(
                    f"The folder {entry.name}/ is empty: nothing was submitted.",
                    hint="Submit your notebook and/or saved model files."))
        else:
            sid = namer.split_student(entry.name)
            sub = students.setdefault(sid, Submission(sid, root=None))
            _add(sub, entry, entry.name, namer)
    return [students[k] for k in sorted(students)]


def _add(sub: Submission, path: Path, shown: str, namer: TaskNamer):
    fmt = _sniff(path, sub.problems, shown)
    if fmt is None:
        return
    sub.files.append(SubmittedFile(path, fmt, namer.task_for(path.name), shown))


__all__ = ["collect", "Submission", "SubmittedFile", "TaskNamer", "FORMAT_NAMES", "formats"]
