"""Intake: turning a submissions folder into students and their files.

A submission is either a folder ``SUBMISSIONS/<student-id>/`` (every file in
it, at any depth) or files named ``<student-id>...`` directly in
``SUBMISSIONS`` (``alice.h5``, ``alice_1c.h5``, ``alice-task2a.keras``), which
are grouped by student id.  Formats are told by bytes (``formats``); a task is
suggested by a file name that names it (``1e.h5``, ``task_2c.keras``).

A submission is untrusted: folders are walked with ``untrusted.Walk`` (no link
is ever followed, bounded in files, bytes and depth by the spec's
``[intake]``), and a link, pipe, socket or device is listed with a message,
never opened.  Every file keeps the trusted folder it was found in (``base``)
and its path below it, so later readers open it without following links.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .. import untrusted
from ..errors import EmptySubmission, SubmissionError, UnreadableFile
from . import formats
from .formats import FORMAT_NAMES, MODEL_FORMATS, sniff_format

IGNORED_NAMES = {"__MACOSX", ".ipynb_checkpoints", "__pycache__", ".DS_Store", "Thumbs.db", ".git"}


@dataclass
class SubmittedFile:
    base: Path  # the trusted folder it was found in (the student's folder, or the submissions folder)
    relative: str  # its path below ``base`` (posix); every folder on the way is the student's
    format: str
    task_hint: str | None = None  # a task id the file name names
    role: str = "submission"  # or "preprocessing" (the input-scaling file of task_hint's model), or
    #                           "imported" (a .py module the student's own notebook or script imports)

    @property
    def path(self) -> Path:
        """Where it is, for showing and for binding into the sandbox; never opened through this path."""
        return self.base / self.relative

    @property
    def name(self) -> str:
        return self.relative.rsplit("/", 1)[-1]

    @property
    def is_model(self) -> bool:
        return self.format in MODEL_FORMATS

    def read(self, limit: int) -> bytes:
        """Its bytes (at most ``limit``), opened without following any link on the way."""
        return untrusted.read_relative(self.base, self.relative, limit)

    def take(self, dest: Path, limit: int) -> Path:
        """Copy it into ``dest`` (a file in a folder the grader owns) without following any link."""
        return untrusted.take_relative(self.base, self.relative, dest, limit)


@dataclass
class Submission:
    student_id: str
    files: list[SubmittedFile] = field(default_factory=list)
    problems: list[SubmissionError] = field(default_factory=list)
    root: Path | None = None
    warnings: list[str] = field(default_factory=list)  # accepted, but not as the course asks (file names)

    @property
    def runs_code(self) -> bool:
        """Whether it holds a notebook or a script: code the sandbox runs, under the notebooks' time limits."""
        return any(f.format in (formats.NOTEBOOK, formats.SCRIPT) for f in self.files)

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


def _visible(name: str) -> bool:
    return not (name.startswith(".") or name in IGNORED_NAMES)


def _bounds(assignment) -> untrusted.Bounds:
    i = assignment.intake
    return untrusted.Bounds(max_entries=i.max_files, max_bytes=i.max_megabytes * 2**20, max_depth=i.max_depth)


def _sniff(base: Path, relative: str, problems: list) -> str | None:
    """The format of ``base/relative``, or None (with a message in ``problems``) when it cannot be read."""
    try:
        root_fd = untrusted.open_tree(base)
    except OSError as e:
        problems.append(UnreadableFile(f"{relative}: its folder cannot be read ({e.strerror or e})."))
        return None
    try:
        fd, name = untrusted.open_relative(root_fd, relative)
        try:
            return sniff_format(Path(name), dir_fd=fd)
        finally:
            if fd != root_fd:
                os.close(fd)
    except untrusted.Refused as e:
        problems.append(UnreadableFile(f"{relative}: {e}; it was skipped.",
                                       hint="Submit the file itself (a notebook, script or model), not a link "
                                            "or a special file."))
    except Exception as e:  # a parser meeting hostile bytes: this file's problem, never the batch's
        problems.append(UnreadableFile(f"{relative}: the file could not be read ({type(e).__name__})."))
    finally:
        os.close(root_fd)
    return None


def _lstat_kind(path: Path) -> str:
    """``file``, ``dir`` or the words for anything else (a link is never followed)."""
    try:
        mode = path.lstat().st_mode
    except OSError as e:
        return f"not readable ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return untrusted.kind_of(mode)


def _collect_folder(sub: Submission, folder: Path, namer: TaskNamer, assignment, skip=()) -> None:
    """Every file of a student's folder, at any depth; SavedModel folders as single entries; nothing at or under
    the relative paths ``skip``."""
    walk = untrusted.Walk(folder, _bounds(assignment), skip=lambda name: not _visible(name))
    entries = [e for e in walk if not any(e.relative == s or e.relative.startswith(s + "/") for s in skip)]
    saved_models = {e.relative.rsplit("/", 1)[0] for e in entries
                    if e.is_file and e.relative.endswith("/saved_model.pb")}
    for e in entries:
        inside = next((d for d in saved_models if e.relative == d or e.relative.startswith(d + "/")), None)
        if inside is not None:
            if e.relative == inside:
                sub.files.append(SubmittedFile(folder, e.relative, formats.SAVEDMODEL,
                                               namer.task_for(Path(e.relative).name)))
            continue
        if e.kind == "dir":
            continue
        if not e.is_file:
            sub.problems.append(UnreadableFile(f"{e.relative}: {e.kind}; it was skipped.",
                                               hint="Submit the file itself, not a link or a special file."))
            continue
        _add(sub, folder, e.relative, namer)
    for problem in walk.problems:
        sub.problems.append(UnreadableFile(f"{folder.name}/: {problem}.",
                                           hint="Submit only your notebook, scripts and model files."))
    _mark_imported(sub)


def _code_of(f: SubmittedFile) -> str:
    """The Python source of a notebook (its code cells) or a script, read as untrusted bytes; '' if unreadable."""
    try:
        data = f.read(formats.MAX_NOTEBOOK_BYTES)
        if f.format == formats.SCRIPT:
            return data.decode("utf-8-sig", errors="replace")  # as Python reads it: a byte-order mark dropped
        cells = formats.parse_json(data).get("cells", [])
        return "\n".join("".join(c["source"]) if isinstance(c.get("source"), list) else str(c.get("source", ""))
                         for c in cells if isinstance(c, dict) and c.get("cell_type") == "code")
    except Exception:  # a damaged file is reported when it is run
        return ""


def _mark_imported(sub: Submission) -> None:
    """A script that another of the student's notebooks or scripts imports is a helper module: it is given to
    the notebook, not run on its own."""
    code = [f for f in sub.files if f.format in (formats.NOTEBOOK, formats.SCRIPT)]
    if len(code) < 2:
        return
    imports = {id(f): formats.imported_modules(_code_of(f)) for f in code}
    for f in code:
        stem = Path(f.name).stem
        if f.format == formats.SCRIPT and any(stem in imports[id(g)] for g in code if g is not f):
            f.role = "imported"


def readable_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (a Latin-1 "José" from an old zip; Python holds them as lone
    surrogates, which no UTF-8 file or database takes: the gradebook's write raised and stopped the batch) shown
    as ``\\xe9`` escapes.  A student id made of such a name is its readable form."""
    return os.fsencode(name).decode("utf-8", "backslashreplace") if re.search("[\udc80-\udcff]", name) else name


def collect(submissions_dir, assignment) -> Students:
    """All students found in ``submissions_dir``, sorted by id."""
    root = Path(submissions_dir)
    namer = TaskNamer(assignment)
    pattern = NamingPattern(assignment) if assignment.intake.pattern else None
    students: dict[str, Submission] = {}
    unrecognised: list[str] = []
    top = untrusted.Walk(root, untrusted.Bounds(max_entries=100_000, max_bytes=2**62, max_depth=1))
    for e in top:  # the class folder itself: its entries, never followed, no deeper than one level
        name = e.relative
        entry = root / name
        if not _visible(name):
            continue
        kind = "file" if e.is_file else e.kind
        if pattern is not None and kind != "dir":
            found = pattern.match(name)
            if found is None:
                unrecognised.append(name)
                continue
            sid, task, kind_, warning = found
            sid = readable_name(sid)
            sub = students.setdefault(sid, Submission(sid, root=None))
            if warning:
                sub.warnings.append(warning)
            if kind != "file":  # never open a pipe, a device or a link
                sub.problems.append(UnreadableFile(f"{name}: {kind}; it was skipped."))
                continue
            fmt = _sniff(root, name, sub.problems)
            if fmt is not None:
                sub.files.append(SubmittedFile(root, name, fmt, task,
                                               "preprocessing" if kind_ == "preprocessing" else "submission"))
            continue
        if kind == "dir" and not _lstat_kind(entry / "saved_model.pb") == "file":
            sub = students.setdefault(readable_name(name), Submission(readable_name(name), root=entry))
            _collect_folder(sub, entry, namer, assignment)
            if not sub.files and not sub.problems:
                sub.problems.append(EmptySubmission(
                    f"The folder {name}/ is empty: nothing was submitted.",
                    hint="Submit your notebook and/or saved model files."))
            continue
        sid = readable_name(namer.split_student(name))
        sub = students.setdefault(sid, Submission(sid, root=None))
        if kind == "dir":
            sub.files.append(SubmittedFile(root, name, formats.SAVEDMODEL, namer.task_for(name)))
        elif kind != "file":
            sub.problems.append(UnreadableFile(f"{name}: {kind}; it was skipped.",
                                               hint="Submit the file itself, not a link or a special file."))
        else:
            _add(sub, root, name, namer)
    return Students((students[k] for k in sorted(students)), unrecognised)


def collect_one(path, assignment, student_id: str, skip=()) -> Submission:
    """One student's submission from a single file or a folder (every file in it, at any depth, except the
    paths in ``skip``: files or folders, such as the course's kit and ``check``'s own output)."""
    path = Path(path)
    namer = TaskNamer(assignment)
    kind = _lstat_kind(path)
    sub = Submission(student_id, root=path if kind == "dir" else None)
    if not _visible(path.name) and path.name not in ("", "."):
        sub.problems.append(UnreadableFile(f"{path.name}: hidden or a system file; it was skipped."))
    elif kind == "dir" and _lstat_kind(path / "saved_model.pb") == "file":
        sub.files.append(SubmittedFile(path.parent, path.name, formats.SAVEDMODEL, namer.task_for(path.name)))
    elif kind == "dir":
        _collect_folder(sub, path, namer, assignment, _relative_to(path, skip))
    elif kind == "file":
        _add(sub, path.parent, path.name, namer)
    else:
        sub.problems.append(UnreadableFile(f"{path.name}: {kind}; it was skipped."))
    return sub


def _relative_to(folder: Path, paths) -> list[str]:
    """The paths of ``paths`` inside ``folder``, relative to it ('/'-separated); the others are left out."""
    base = os.path.realpath(folder)
    found = []
    for p in paths:
        full = os.path.realpath(p)
        if full != base and full.startswith(base.rstrip(os.sep) + os.sep):
            found.append(os.path.relpath(full, base).replace(os.sep, "/"))
    return found


def _add(sub: Submission, base: Path, relative: str, namer: TaskNamer):
    fmt = _sniff(base, relative, sub.problems)
    if fmt is None:
        return
    name = relative.rsplit("/", 1)[-1]
    task = namer.task_for(name)
    role = "preprocessing" if task and Path(name).suffix.lower() in namer.companion_suffixes.get(task, ()) \
        else "submission"
    sub.files.append(SubmittedFile(base, relative, fmt, task, role))


__all__ = ["NamingPattern", "Students", "collect", "collect_one", "Submission", "SubmittedFile", "TaskNamer", "FORMAT_NAMES", "formats"]
