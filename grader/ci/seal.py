"""The seal of the gradebook folder CI carries between runs in the Actions cache.

Jobs the grading job does not control can write that cache (another workflow's, on the default branch; any,
where GitHub's cache-mode is not enforced), so it trusts a restored folder only when its seal, an HMAC keyed
from the grading secret over every file's path and SHA-256, matches: ``seal`` writes it before the cache is
saved, ``verify`` says why a restored folder is refused (none, another secret, a file changed, added or
removed, too many or too large files).  The folder is untrusted: walked without following a link, only
regular files read, its entries and sizes bounded before anything is hashed.  ``python -P -m grader.ci.seal
seal|verify FOLDER`` (GRADER_SECRET set): either exits 1, printing the reason on one line, when it refuses.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
from pathlib import Path

from .. import untrusted
from ..errors import FatalError

FORMAT = "grader-ci-seal/1"
SEAL = ".grader-seal.json"
#: a seal larger than this is not read (one line per file of the class's pages)
MAX_SEAL = 64 * 2**20
#: a gradebook folder past these bounds is neither sealed nor trusted (its pages, plots and gradebook of a
#: class of thousands are far below them; the Actions cache holds 10 GB a repository)
MAX_ENTRIES = 100_000
MAX_FILE = 2 * 2**30
MAX_BYTES = 4 * 2**30
MAX_DEPTH = 16


def _key(secret: str) -> bytes:
    from ..evaluate.heldout import grading_key, purpose_key

    return purpose_key(grading_key(secret, "grader-ci-gradebook"), "gradebook-seal")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n} bytes"


def _shown(rel: str) -> str:
    from ..textsafe import terminal

    return terminal(rel[:120])


def listing(folder: Path) -> dict[str, str | None]:
    """Every entry under ``folder`` but the seal, by path (``/``-separated), without reading a file: ``None``
    for a regular file (hashed by ``manifest``), ``link:`` and its target for a symbolic link (never
    followed), ``dir`` for a folder, ``other`` for anything else.  ``FatalError`` (why, in words) past
    ``MAX_ENTRIES`` entries, ``MAX_DEPTH`` folders, a file of ``MAX_FILE`` or files of ``MAX_BYTES`` in all,
    or for what cannot be read."""
    walk = untrusted.Walk(folder, untrusted.Bounds(max_entries=MAX_ENTRIES + 1, max_bytes=2**62,
                                                   max_depth=MAX_DEPTH))
    found: dict[str, str | None] = {}
    total = 0
    entries = iter(walk)
    try:
        for e in entries:
            if e.relative == SEAL:
                continue
            if e.is_file:
                if e.size > MAX_FILE:
                    raise FatalError(f"{_shown(e.relative)} is {_size(e.size)}, more than the {_size(MAX_FILE)} a "
                                     "file of a sealed gradebook may be (nothing was read)")
                total += e.size
                if total > MAX_BYTES:
                    raise FatalError(f"its files are more than {_size(MAX_BYTES)} in all, more than a sealed "
                                     f"gradebook may hold (at {_shown(e.relative)}; nothing was read)")
                found[e.relative] = None
            elif e.kind == "dir":
                found[e.relative] = "dir"
            elif e.kind == untrusted.kind_of(0o120000):  # a symbolic link: its target is read, never followed
                found[e.relative] = "link:" + os.readlink(Path(folder) / e.relative)
            elif e.kind.startswith("unreadable"):
                raise FatalError(f"{_shown(e.relative)} cannot be read: {e.kind}")
            else:
                found[e.relative] = "other"
    except OSError as e:  # readlink of an entry swapped since it was listed
        raise FatalError(f"it changed while it was read ({e.strerror or e})") from None
    finally:
        entries.close()
    if len(found) > MAX_ENTRIES or walk.entries > MAX_ENTRIES + 1:
        raise FatalError(f"it holds more than {MAX_ENTRIES} files and folders, more than a sealed gradebook may "
                         "(nothing was read)")
    if walk.problems:
        raise FatalError(walk.problems[0])
    return found


def manifest(folder: Path, listed: dict[str, str | None] | None = None) -> dict[str, str]:
    """``listing`` with each regular file's SHA-256 (read without following a link, at most ``MAX_FILE``
    bytes a file and ``MAX_BYTES`` in all, however they grow while read)."""
    listed = listing(folder) if listed is None else listed
    found: dict[str, str] = {}
    left = MAX_BYTES
    for rel, what in listed.items():
        if what is None:
            try:
                what, size = untrusted.sha256_relative(folder, rel, limit=min(MAX_FILE, left))
            except untrusted.Refused as e:
                raise FatalError(f"{_shown(rel)} was not hashed: {e} (it changed while it was read)") from None
            except OSError as e:
                raise FatalError(f"{_shown(rel)} cannot be read ({e.strerror or e})") from None
            left -= size
        found[rel] = what
    return found


def _mac(secret: str, files: dict[str, str]) -> str:
    body = json.dumps({"format": FORMAT, "files": files}, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(_key(secret), body.encode(), hashlib.sha256).hexdigest()


def seal(folder: Path, secret: str) -> int:
    """Write ``folder``'s seal (nothing when there is no folder); returns the number of entries sealed.
    ``FatalError`` (why) for a folder past the bounds, whose old seal is removed: the next run trusts none."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return 0
    try:
        files = manifest(folder)
    except FatalError:
        try:
            os.unlink(folder / SEAL)
        except OSError:
            pass
        raise
    doc = {"format": FORMAT, "files": files, "hmac_sha256": _mac(secret, files)}
    tmp = folder / (SEAL + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "w", encoding="ascii") as f:
        f.write(json.dumps(doc, indent=0, sort_keys=True, ensure_ascii=True) + "\n")
    os.replace(tmp, folder / SEAL)
    return len(files)


def _is_digest(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _refuse_differences(found: dict[str, str | None], files: dict[str, str]) -> None:
    """``FatalError`` naming what differs from the seal (a file not hashed yet, ``None``, differs only from
    what is not a file)."""
    from ..textsafe import terminal

    def same(k: str) -> bool:
        if k not in found or k not in files:
            return False
        return _is_digest(files[k]) if found[k] is None else found[k] == files[k]

    differ = sorted((k for k in set(found) | set(files) if not same(k)),
                    key=lambda k: ("/." in "/" + k, k))  # the gradebook before its lock file
    if not differ:
        return
    shown = [f"{terminal(k[:120])} was " + ("added" if k not in files else "removed" if k not in found
                                            else "changed") for k in differ[:3]]
    more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
    raise FatalError(", ".join(shown) + f" after it was sealed{more}")


def verify(folder: Path, secret: str) -> None:
    """``FatalError`` (its message: why, on one line) unless ``folder`` is as ``seal`` left it with ``secret``.
    Its entries are listed (bounded) and compared with the seal's before any file is hashed."""
    folder = Path(folder)
    path = folder / SEAL
    if folder.is_symlink() or not folder.is_dir():
        raise FatalError("it is not a folder")
    try:
        data = untrusted.read_bytes(path, MAX_SEAL)
    except untrusted.Refused as e:
        if not path.exists() and not path.is_symlink():
            raise FatalError(f"it carries no seal ({SEAL}): it was not saved by this workflow, or by an older "
                             "one") from None
        raise FatalError(f"its seal ({SEAL}) is refused: {e}") from None
    try:
        doc = json.loads(data)
        files, mac = doc["files"], str(doc["hmac_sha256"])
        ok = doc["format"] == FORMAT and isinstance(files, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    except (ValueError, KeyError, TypeError, RecursionError):
        ok = False
    if not ok:
        raise FatalError(f"its seal ({SEAL}) is not a {FORMAT} file")
    if not hmac.compare_digest(_mac(secret, files), mac):
        raise FatalError("its seal was not made with this GRADER_SECRET (forged, or another secret's)")
    listed = listing(folder)
    _refuse_differences(listed, files)  # added, removed or changed kind: nothing hashed
    _refuse_differences(manifest(folder, listed), files)


def main(argv: list[str]) -> int:
    from ..evaluate.heldout import SECRET_ENV

    if len(argv) != 2 or argv[0] not in ("seal", "verify"):
        print("usage: python -P -m grader.ci.seal seal|verify FOLDER", file=sys.stderr)
        return 2
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        print(f"{SECRET_ENV} is not set: the seal is keyed from it", file=sys.stderr)
        return 2
    if argv[0] == "seal":
        try:
            print(f"sealed {seal(Path(argv[1]), secret)} entries of {argv[1]}")
        except FatalError as e:
            print(f"::error::{argv[1]} was not sealed: {e}".replace("\n", " ").replace("%", "%25") +
                  ". The next run will not trust it and grades every student again.")
            return 1
        return 0
    try:
        verify(Path(argv[1]), secret)
    except FatalError as e:
        print(str(e).replace("\n", " "))
        return 1
    print(f"{argv[1]}: its seal matches")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
