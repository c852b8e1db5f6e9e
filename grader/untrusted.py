"""Reading what a student controls: files, folders, and what a sandbox hands back.

The one way the grader looks at hostile bytes: nothing is followed (``O_NOFOLLOW`` relative to a folder
descriptor), only regular files are read (checked on the opened descriptor, opened non-blocking), and every
read, walk and copy is bounded (``Refused`` says why, in words for the student).  ``take`` copies a file
into a folder the grader owns.  Why: docs/design/untrusted.md.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_CHUNK = 1 << 20


class Refused(Exception):
    """A file or folder the grader will not read, with the reason in words (``str(e)``)."""


def kind_of(mode: int) -> str:
    """What a file is, in words, from its ``st_mode``."""
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link (links are never followed)"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    return "not a regular file"


def _open_parent(path: Path) -> tuple[int, str]:
    """A descriptor of ``path``'s folder (the folder itself trusted: the caller names it) and the last name."""
    path = Path(path)
    return os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), path.name


def open_regular(name, dir_fd: int | None = None) -> int:
    """Open a regular file for reading without following a link; returns the descriptor.

    With ``dir_fd``, ``name`` is a single name in that folder; without, ``name`` is a path whose last
    component alone is untrusted.  Raises ``Refused`` for anything but a regular file."""
    own = None
    if dir_fd is None:
        try:
            own, name = _open_parent(Path(name))
        except OSError as e:
            raise Refused(f"its folder cannot be read ({e.strerror or e})") from None
        dir_fd = own
    try:
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise Refused(kind_of(stat.S_IFLNK)) from None
            if e.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket, or a FIFO without a writer
                raise Refused("not a regular file (a pipe, socket or device)") from None
            raise Refused(f"it cannot be read ({e.strerror or e})") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise Refused(kind_of(st.st_mode))
        os.set_blocking(fd, True)
        return fd
    finally:
        if own is not None:
            os.close(own)


def _too_large(limit: int) -> Refused:
    return Refused(f"it is larger than {_size(limit)}, the grader's limit for such a file")


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB" if n >= 1024 else f"{n} bytes"


def read_bytes(name, limit: int, dir_fd: int | None = None) -> bytes:
    """The whole content of a regular file, refused when larger than ``limit`` bytes."""
    fd = open_regular(name, dir_fd)
    try:
        if os.fstat(fd).st_size > limit:
            raise _too_large(limit)
        parts, total = [], 0
        while True:
            block = os.read(fd, min(_CHUNK, limit + 1 - total))
            if not block:
                return b"".join(parts)
            parts.append(block)
            total += len(block)
            if total > limit:  # it grew while we read
                raise _too_large(limit)
    finally:
        os.close(fd)


def read_head(name, n: int = 4096, dir_fd: int | None = None) -> bytes:
    """The first ``n`` bytes of a regular file."""
    fd = open_regular(name, dir_fd)
    try:
        return os.read(fd, n)
    finally:
        os.close(fd)


def take(name, dest: Path, limit: int, dir_fd: int | None = None) -> Path:
    """Copy a regular file's bytes (at most ``limit``) to ``dest``, a new file in a folder the grader owns."""
    fd = open_regular(name, dir_fd)
    try:
        if os.fstat(fd).st_size > limit:
            raise _too_large(limit)
        dest = Path(dest)
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            total = 0
            while True:
                block = os.read(fd, _CHUNK)
                if not block:
                    break
                total += len(block)
                if total > limit:
                    raise _too_large(limit)
                os.write(out, block)
        except BaseException:
            os.close(out)
            out = None
            dest.unlink(missing_ok=True)
            raise
        finally:
            if out is not None:
                os.close(out)
        return dest
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Entry:
    """One thing found in a tree: its path relative to the root (posix), what it is, its size."""

    relative: str
    kind: str  # "file", "dir" or the words of ``kind_of`` for anything else
    size: int = 0

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


@dataclass
class Bounds:
    """How much of a tree a walk looks at."""

    max_entries: int = 500
    max_bytes: int = 200 * 2**20
    max_depth: int = 8


class Walk:
    """A bounded walk of a folder that never follows a link.

    Iterating yields ``Entry`` objects, folders before what they hold, in name order; links, pipes,
    sockets and devices are yielded with their kind (never opened).  ``problems`` lists, in words,
    what was cut short: too many entries, too many bytes, too deep, unreadable folders."""

    def __init__(self, root: Path, bounds: Bounds = Bounds(), *, skip=lambda name: False):
        self.root = Path(root)
        self.bounds = bounds
        self.skip = skip
        self.problems: list[str] = []
        self.entries = 0
        self.bytes = 0

    def __iter__(self):
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except OSError as e:
            self.problems.append(f"the folder cannot be read ({e.strerror or e})")
            return
        try:
            yield from self._walk(fd, "", 1)
        except _Stop:
            return
        finally:
            os.close(fd)

    def _walk(self, fd: int, prefix: str, depth: int):
        try:
            with os.scandir(fd) as it:
                names = sorted((e.name, e) for e in it)
        except OSError as e:
            self.problems.append(f"{prefix or '.'}/ cannot be read ({e.strerror or e})")
            return
        for name, entry in names:
            if self.skip(name):
                continue
            rel = f"{prefix}{name}"
            self.entries += 1
            if self.entries > self.bounds.max_entries:
                self.problems.append(f"it holds more than {self.bounds.max_entries} files and folders; "
                                     "the rest were not looked at")
                raise _Stop
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                yield Entry(rel, f"unreadable ({e.strerror or e})")
                continue
            if stat.S_ISDIR(st.st_mode):
                yield Entry(rel, "dir")
                if depth >= self.bounds.max_depth:
                    self.problems.append(f"{rel}/ is nested more than {self.bounds.max_depth} folders deep; "
                                         "what it holds was not looked at")
                    continue
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:  # swapped for a link since we looked, or unreadable
                    yield Entry(rel, f"unreadable ({e.strerror or e})")
                    continue
                try:
                    yield from self._walk(sub, rel + "/", depth + 1)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                if self.bytes + st.st_size > self.bounds.max_bytes:
                    self.problems.append(f"{rel} was not taken: the files together exceed "
                                         f"{_size(self.bounds.max_bytes)}")
                    continue
                self.bytes += st.st_size
                yield Entry(rel, "file", st.st_size)
            else:
                yield Entry(rel, kind_of(st.st_mode))

class _Stop(Exception):
    pass


def open_tree(root: Path) -> int:
    """A descriptor of a folder that may not be a link."""
    return os.open(root, _DIR_FLAGS)


def open_relative(root_fd: int, relative: str) -> tuple[int, str]:
    """(descriptor of the folder holding ``relative``, its last name), walking each folder without
    following links.  The caller closes the descriptor (it may be ``root_fd`` itself: compare)."""
    parts = relative.split("/")
    fd = root_fd
    try:
        for part in parts[:-1]:
            if part in ("", ".", ".."):
                raise Refused("a path with empty, '.' or '..' parts")
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            if fd != root_fd:
                os.close(fd)
            fd = nxt
    except OSError as e:
        if fd != root_fd:
            os.close(fd)
        raise Refused(f"its folder cannot be opened ({e.strerror or e})") from None
    return fd, parts[-1]


def take_relative(root: Path, relative: str, dest: Path, limit: int) -> Path:
    """``take`` of ``root/relative``, every folder on the way opened without following links."""
    root_fd = open_tree(root)
    try:
        fd, name = open_relative(root_fd, relative)
        try:
            return take(name, dest, limit, dir_fd=fd)
        finally:
            if fd != root_fd:
                os.close(fd)
    finally:
        os.close(root_fd)


def read_relative(root: Path, relative: str, limit: int) -> bytes:
    """``read_bytes`` of ``root/relative`` without following links on the way."""
    root_fd = open_tree(root)
    try:
        fd, name = open_relative(root_fd, relative)
        try:
            return read_bytes(name, limit, dir_fd=fd)
        finally:
            if fd != root_fd:
                os.close(fd)
    finally:
        os.close(root_fd)


def sha256_relative(root: Path, relative: str, limit: int | None = None) -> tuple[str, int]:
    """(hex SHA-256, size) of ``root/relative``'s bytes, read without following links on the way (``Refused``
    past ``limit`` bytes, when given: checked before the first read, and as it grows while read)."""
    import hashlib

    root_fd = open_tree(root)
    try:
        fd, name = open_relative(root_fd, relative)
        try:
            file_fd = open_regular(name, dir_fd=fd)
        finally:
            if fd != root_fd:
                os.close(fd)
    finally:
        os.close(root_fd)
    h, size = hashlib.sha256(), 0
    try:
        if limit is not None and os.fstat(file_fd).st_size > limit:
            raise _too_large(limit)
        while block := os.read(file_fd, _CHUNK):
            h.update(block)
            size += len(block)
            if limit is not None and size > limit:
                raise _too_large(limit)
    finally:
        os.close(file_fd)
    return h.hexdigest(), size
