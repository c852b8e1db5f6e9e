"""The seal of the gradebook folder CI carries between runs in the Actions cache.

Jobs the grading job does not control can write that cache (another workflow's, on the default branch; any,
where GitHub's cache-mode is not enforced), so it trusts a restored folder only when its seal, an HMAC keyed
from the grading secret over every file's path and SHA-256, matches: ``seal`` writes it before the cache is
saved, ``verify`` says why a restored folder is refused (none, another secret, a file changed, added or
removed).  ``python -P -m grader.ci.seal seal|verify FOLDER`` (GRADER_SECRET set): verify exits 1, printing
the reason on one line, when the folder is refused.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import sys
from pathlib import Path

from ..errors import FatalError

FORMAT = "grader-ci-seal/1"
SEAL = ".grader-seal.json"
#: a seal larger than this is not read (one line per file of the class's pages)
MAX_SEAL = 64 * 2**20


def _key(secret: str) -> bytes:
    from ..evaluate.heldout import grading_key, purpose_key

    return purpose_key(grading_key(secret, "grader-ci-gradebook"), "gradebook-seal")


def manifest(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` but the seal, by path (``/``-separated): a file's SHA-256, ``link:`` and
    its target for a symbolic link (never followed), ``dir`` for a folder, ``other`` for anything else."""
    found: dict[str, str] = {}
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(top) / name
            rel = path.relative_to(folder).as_posix()
            if rel == SEAL:
                continue
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                found[rel] = "link:" + os.readlink(path)
            elif stat.S_ISDIR(mode):
                found[rel] = "dir"
            elif stat.S_ISREG(mode):
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(2**20), b""):
                        digest.update(block)
                found[rel] = digest.hexdigest()
            else:
                found[rel] = "other"
    return found


def _mac(secret: str, files: dict[str, str]) -> str:
    body = json.dumps({"format": FORMAT, "files": files}, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(_key(secret), body.encode(), hashlib.sha256).hexdigest()


def seal(folder: Path, secret: str) -> int:
    """Write ``folder``'s seal (nothing when there is no folder); returns the number of entries sealed."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return 0
    files = manifest(folder)
    doc = {"format": FORMAT, "files": files, "hmac_sha256": _mac(secret, files)}
    tmp = folder / (SEAL + ".tmp")
    tmp.write_text(json.dumps(doc, indent=0, sort_keys=True, ensure_ascii=True) + "\n")
    os.replace(tmp, folder / SEAL)
    return len(files)


def verify(folder: Path, secret: str) -> None:
    """``FatalError`` (its message: why, on one line) unless ``folder`` is as ``seal`` left it with ``secret``."""
    from ..textsafe import terminal

    folder = Path(folder)
    path = folder / SEAL
    if folder.is_symlink() or not folder.is_dir():
        raise FatalError("it is not a folder")
    if path.is_symlink() or not path.is_file():
        raise FatalError(f"it carries no seal ({SEAL}): it was not saved by this workflow, or by an older one")
    with open(path, "rb") as f:
        data = f.read(MAX_SEAL + 1)
    try:
        doc = json.loads(data) if len(data) <= MAX_SEAL else None
        files, mac = doc["files"], str(doc["hmac_sha256"])
        ok = doc["format"] == FORMAT and isinstance(files, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    except (ValueError, KeyError, TypeError, RecursionError):
        ok = False
    if not ok:
        raise FatalError(f"its seal ({SEAL}) is not a {FORMAT} file")
    if not hmac.compare_digest(_mac(secret, files), mac):
        raise FatalError("its seal was not made with this GRADER_SECRET (forged, or another secret's)")
    found = manifest(folder)
    if found != files:
        differ = sorted((k for k in set(found) | set(files) if found.get(k) != files.get(k)),
                        key=lambda k: ("/." in "/" + k, k))  # the gradebook before its lock file
        shown = [f"{terminal(k[:120])} was " + ("added" if k not in files else "removed" if k not in found
                                                else "changed") for k in differ[:3]]
        more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
        raise FatalError(", ".join(shown) + f" after it was sealed{more}")


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
        print(f"sealed {seal(Path(argv[1]), secret)} entries of {argv[1]}")
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
