"""``FrozenSpec``: an assignment as one batch read it, to travel to its workers as data.

``freeze`` reads the assignment folder once: the bytes of every file, a SHA-256 over them, and the
``Assignment`` parsed from those bytes.  Workers receive it (it pickles), write the bytes into a private
folder (``FrozenSpec.here``) and never read the TA's folder.  Links are not followed and sizes are bounded.
Why: docs/design/spec.md.
"""
from __future__ import annotations

import atexit
import dataclasses
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

from .. import untrusted
from ..errors import SpecError
from .loader import SPEC_FILE, load_assignment
from .model import Assignment

#: the most a spec folder may hold (its files travel with every job)
MAX_SPEC_BYTES = 32 * 2**20
MAX_SPEC_ENTRIES = 10_000
MAX_SPEC_DEPTH = 16
#: names never part of a spec (with anything hidden, and compiled Python)
_SKIPPED = {"__pycache__", ".git", ".ipynb_checkpoints"}


@dataclasses.dataclass(frozen=True, eq=False)
class FrozenSpec:
    """The files of an assignment folder (relative POSIX name, bytes), their ``digest`` and the ``Assignment``
    parsed from them.  ``source`` is the folder the TA named (for messages and the gradebook)."""

    source: str
    files: tuple[tuple[str, bytes], ...]
    digest: str
    parsed: Assignment  # its paths point at the copy of the process that parsed it

    def here(self) -> Assignment:
        """The assignment in this process: the files written once (per process and digest) into a private
        folder, the parsed spec's paths moved there."""
        with _lock:
            done = _here.get(self.digest)
            if done is None:
                root = _materialize(self)
                done = _here[self.digest] = _rebase(self.parsed, root)
            return done


def freeze(folder, *, require_thresholds: bool = True, expected_digest: str | None = None) -> FrozenSpec:
    """Read the assignment ``folder`` once: its files, their hash, and the spec parsed from those very bytes.
    A ``SpecError`` names the TA's folder, not the private copy.  ``expected_digest`` pins the folder: when
    its hash is another, a ``DigestMismatch`` is raised before anything is written, parsed or imported."""
    source, files = _source_files(folder)
    digest = _digest(files)
    if expected_digest is not None:
        _check_digest(source, digest, expected_digest)
    spec = FrozenSpec(str(source), files, digest, None)  # type: ignore[arg-type]
    with _lock:
        root = _materialize(spec)
    try:
        parsed = load_assignment(root, require_thresholds=require_thresholds)
    except SpecError as e:
        raise _named_after(e, root, source) from None
    parsed = dataclasses.replace(parsed, source=source, digest=digest)
    object.__setattr__(spec, "parsed", parsed)
    with _lock:
        _here[digest] = parsed
    return spec


class DigestMismatch(SpecError):
    """The assignment folder is not the one a TA pinned by its hash (``--assignment-sha256``)."""


def assignment_digest(folder) -> str:
    """The SHA-256 that names the assignment ``folder`` (what ``freeze`` records and ``--assignment-sha256``
    pins): its files are read, nothing is parsed or imported."""
    return _digest(_source_files(folder)[1])


def verify_digest(folder, expected: str) -> str:
    """Refuse (``DigestMismatch``) the assignment ``folder`` unless its hash is ``expected``; returns it."""
    source, files = _source_files(folder)
    digest = _digest(files)
    _check_digest(source, digest, expected)
    return digest


def _source_files(folder) -> tuple[Path, tuple[tuple[str, bytes], ...]]:
    source = Path(folder).resolve()
    if source.is_file():
        source = source.parent
    if not (source / SPEC_FILE).is_file():
        raise SpecError(source / SPEC_FILE, None, "file not found")
    return source, tuple(_read_files(source))


def _digest(files) -> str:
    h = hashlib.sha256()
    for name, data in files:
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def _check_digest(source: Path, digest: str, expected: str) -> None:
    wanted = expected.strip().lower()
    if len(wanted) != 64 or any(c not in "0123456789abcdef" for c in wanted):
        raise DigestMismatch(source, None, f"the pinned hash {expected!r} is not a SHA-256 (64 hex digits); "
                             f"`grader workflow -a {source}` prints the folder's")
    if digest != wanted:
        raise DigestMismatch(source, None, f"its SHA-256 is {digest}, not the pinned {wanted}: the assignment "
                             "folder was changed since a TA pinned it, so nothing of it was run. If a TA changed "
                             "it, pin the new hash (`grader workflow -a <folder>` prints it)")


def _skipped(name: str) -> bool:
    return name in _SKIPPED or name.startswith(".") or name.endswith((".pyc", ".pyo"))


def _read_files(source: Path):
    """(relative name, bytes) of every regular file under ``source``, in name order: a bounded walk that never
    follows a link (``untrusted.Walk``), each file read without following one either."""
    walk = untrusted.Walk(source, untrusted.Bounds(max_entries=MAX_SPEC_ENTRIES, max_bytes=MAX_SPEC_BYTES,
                                                   max_depth=MAX_SPEC_DEPTH), skip=_skipped)
    files, total = [], 0
    for entry in walk:
        if not entry.is_file:  # folders are walked; links, pipes and devices are never opened
            continue
        try:
            data = untrusted.read_relative(source, entry.relative, MAX_SPEC_BYTES - total)
        except (OSError, untrusted.Refused) as e:  # replaced or grown since the walk saw it
            raise SpecError(source / entry.relative, None, f"it could not be read ({e})") from None
        total += len(data)
        files.append((entry.relative, data))
    if walk.problems:
        raise SpecError(source, None, f"{'; '.join(walk.problems)}. Every worker gets a copy of the assignment "
                        "folder: keep only the spec, the reference code and the files the notebooks need there")
    return files


_lock = threading.Lock()
_here: dict[str, Assignment] = {}  # digest -> the assignment in this process
_roots: dict[str, Path] = {}  # digest -> where this process wrote the files


_PREFIX = "grader-spec-"


def _materialize(spec: FrozenSpec) -> Path:
    root = _roots.get(spec.digest)
    if root is not None and root.is_dir():
        return root
    _remove_orphans()
    # 0700: this user's only; named after this process, so that a copy a killed process left is found
    parent = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{spec.digest[:12]}-p{os.getpid()}-"))
    atexit.register(shutil.rmtree, parent, True)
    root = parent / (Path(spec.source).name or "assignment")
    for name, data in spec.files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    _roots[spec.digest] = root
    return root


def _remove_orphans() -> list[Path]:
    """Remove the copies that processes of this user left when they were killed (no exit handler ran): a
    ``grader-spec-<digest>-p<pid>-*`` folder whose process is gone."""
    removed = []
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(_PREFIX) or entry.is_symlink():
            continue
        try:
            pid = int(entry.name[len(_PREFIX):].split("-")[1][1:])
            if entry.stat(follow_symlinks=False).st_uid != os.getuid() or pid == os.getpid():
                continue
            os.kill(pid, 0)
        except ProcessLookupError:  # its process is gone
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
        except (ValueError, IndexError, OSError):  # not one of ours, or a live process of another user
            continue
    return removed


def _moved(path, old: Path, new: Path):
    if path is None:
        return None
    path = Path(path)
    return new / path.relative_to(old) if path.is_relative_to(old) else path


def _rebase(parsed: Assignment, root: Path) -> Assignment:
    """``parsed`` with every path inside its folder moved under ``root`` (the same files, written here)."""
    old = parsed.root
    datasets = {name: dataclasses.replace(ds, heldout_file=_moved(ds.heldout_file, old, root))
                for name, ds in parsed.datasets.items()}
    return dataclasses.replace(parsed, root=root, spec_path=_moved(parsed.spec_path, old, root),
                               calibration_path=_moved(parsed.calibration_path, old, root), datasets=datasets)


def _named_after(e: SpecError, copy: Path, source: Path) -> SpecError:
    def swap(text):
        return None if text is None else str(text).replace(str(copy), str(source))
    return SpecError(swap(e.path), e.field, swap(e.problem))
