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
    role: str = "submission"  # or "preprocessing": the input-scaling file of the model of task_hint

    @property
    def is_model(self) -> bool:
        return self.format in MODEL_FORMATS


@dataclass
class Submission:
    student_id: str
    files: list[SubmittedFile] = field(default_factory=list)
    problems: list[SubmissionError] = field(default_factory=list)
    root: Path | None = None
    warnings: list[str] = field(default_factory=list)  # accepted, but not as the course asks (file names)

    def companion(self, task_id: str) -> SubmittedFile | None:
        """The preprocessing file submitted for ``task_id``'s model, if any."""
        return next((f for f in self.files if f.role == "preprocessing" and f.task_hint == task_id), None)


class Students(list):
    """The students of a submissions folder, plus the files that belong to nobody."""

    unrecognised: list[str]

    def __init__(self, items=(), unrecognised=()):
        super().__init__(items)
        self.unrecognised = list(unrecognised)


class NamingPattern:
    """The file names a course fixes, e.g. ``{student}-{task}`` + ``.h5`` (or a preprocessing suffix).

    ``match(name)`` gives (student, task, kind, warning): ``kind`` is "model" or "preprocessing";
    ``warning`` is None for an exact name, or says what the right name is for a near miss (other case,
    ``_`` or a space for the separator, ``.hdf5``/``.keras`` for a model); None when nothing matches.
    """

    def __init__(self, assignment):
        intake = assignment.intake
        self.models = intake.model_extensions
        self.companions = {t.preprocessing.suffix.lower(): t.id for t in assignment.tasks if t.preprocessing}
        tasks = "|".join(re.escape(t.id) for t in sorted(assignment.tasks, key=lambda t: len(t.id), reverse=True))
        parts = re.split(r"(\{student\}|\{task\})", intake.pattern)
        strict, loose = [], []
        for part in parts:
            if part == "{student}":
                strict.append(r"(?P<student>[a-z0-9][a-z0-9._]*?)")
                loose.append(r"(?P<student>[A-Za-z0-9][A-Za-z0-9._]*?)")
            elif part == "{task}":
                strict.append(f"(?P<task>{tasks})")
                loose.append(f"(?P<task>{tasks})")
            else:
                strict.append(re.escape(part))
                loose.append("".join("[-_ ]" if c in "-_ " else re.escape(c) for c in part))
        self.strict = re.compile("".join(strict) + r"(?P<ext>\.[a-z0-9]+)")
        self.loose = re.compile("".join(loose) + r"(?P<ext>\.[A-Za-z0-9]+)", re.IGNORECASE)
        self.intake = intake

    def match(self, name: str):
        m = self.strict.fullmatch(name)
        if m and (m["ext"] in self.models or m["ext"] in self.companions):
            kind = "model" if m["ext"] in self.models else "preprocessing"
            return m["student"], m["task"], kind, None
        m = self.loose.fullmatch(name)
        if not m:
            return None
        ext = m["ext"].lower()
        if ext in self.companions:
            kind, right_ext = "preprocessing", ext
        elif ext in self.models or ext in (".h5", ".hdf5", ".keras"):
            kind, right_ext = "model", self.models[0]
        else:
            return None
        student = m["student"].lower()
        right = self.intake.file_name(student, m["task"], right_ext)
        return student, m["task"], kind, (f"{name} was taken as {right}; name it exactly {right} (the course's "
                                          "marking expects that name).")


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
        self.companion_suffixes = {t.id: (t.preprocessing.suffix.lower(),) for t in assignment.tasks
                                   if t.preprocessing}

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


def collect(submissions_dir, assignment) -> Students:
    """All students found in ``submissions_dir``, sorted by id."""
    root = Path(submissions_dir)
    namer = TaskNamer(assignment)
    pattern = NamingPattern(assignment) if assignment.intake.pattern else None
    students: dict[str, Submission] = {}
    unrecognised: list[str] = []
    for entry in sorted(root.iterdir()):
        if pattern is not None and _visible(entry) and not entry.is_dir():
            found = pattern.match(entry.name)
            if found is None:
                unrecognised.append(entry.name)
                continue
            sid, task, kind, warning = found
            sub = students.setdefault(sid, Submission(sid, root=None))
            if warning:
                sub.warnings.append(warning)
            why = _special(entry)  # never open a pipe or a dangling link
            if why:
                sub.problems.append(UnreadableFile(f"{entry.name}: {why}; it was skipped."))
                continue
            fmt = _sniff(entry, sub.problems, entry.name)
            if fmt is not None:
                sub.files.append(SubmittedFile(entry, fmt, task, entry.name,
                                               "preprocessing" if kind == "preprocessing" else "submission"))
            continue
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
    return Students((students[k] for k in sorted(students)), unrecognised)


def collect_one(path, assignment, student_id: str) -> Submission:
    """One student's submission from a single file or a folder (every file in it, at any depth)."""
    path = Path(path)
    namer = TaskNamer(assignment)
    sub = Submission(student_id, root=path if path.is_dir() else None)
    why = _special(path) if _visible(path) else "hidden or a system file"
    if why:
        sub.problems.append(UnreadableFile(f"{path.name}: {why}; it was skipped."))
    elif path.is_dir() and not (path / "saved_model.pb").is_file():
        for p in _walk(path, sub.problems, path):
            _add(sub, p, p.relative_to(path).as_posix(), namer)
    else:
        _add(sub, path, path.name, namer)
    return sub


def _add(sub: Submission, path: Path, shown: str, namer: TaskNamer):
    fmt = _sniff(path, sub.problems, shown)
    if fmt is None:
        return
    task = namer.task_for(path.name)
    role = "preprocessing" if task and path.suffix.lower() in namer.companion_suffixes.get(task, ()) else "submission"
    sub.files.append(SubmittedFile(path, fmt, task, shown, role))


__all__ = ["NamingPattern", "Students", "collect", "collect_one", "Submission", "SubmittedFile", "TaskNamer", "FORMAT_NAMES", "formats"]
