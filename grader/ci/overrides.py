"""The override log: a class's TA overrides (the audit trail) in a file that outlives the gradebook.

CI keeps the gradebook in a cache that GitHub may evict; re-grading gives the same scores, but the overrides
would be lost.  ``sync_log`` brings a gradebook and the log level (overrides the log has and the gradebook
lacks are put back, as they were) and writes the log again.  The log is signed with an HMAC keyed by the
grading secret (``heldout.purpose_key``), so a log edited by anyone without the secret is refused, never read.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import FatalError

FORMAT = "grader-override-log/1"
#: a log larger than this is not read (a class's overrides are a few kilobytes)
MAX_BYTES = 16 * 2**20


@dataclass
class Synced:
    """What ``sync_log`` did: the rows put back into the gradebook, the rows the log gained, and whether the
    log file existed before."""

    put_back: list[dict]
    logged: int
    total: int
    had_log: bool


def _key(secret: str, assignment_id: str) -> bytes:
    from ..evaluate.heldout import grading_key, purpose_key

    return purpose_key(grading_key(secret, assignment_id), "override-log")


def _body(assignment_id: str, rows: list[dict]) -> bytes:
    return json.dumps({"format": FORMAT, "assignment": assignment_id, "overrides": rows}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True).encode()


def log_text(assignment_id: str, rows: list[dict], secret: str) -> str:
    """The log of ``rows`` (``Gradebook.LOGGED`` dicts, oldest first), signed."""
    mac = hmac.new(_key(secret, assignment_id), _body(assignment_id, rows), hashlib.sha256).hexdigest()
    doc = {"format": FORMAT, "assignment": assignment_id, "overrides": rows, "hmac_sha256": mac}
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def read_log(path: Path, assignment_id: str, secret: str) -> list[dict]:
    """The rows of the log at ``path``; ``FatalError`` when it is not a log of ``assignment_id`` signed with
    ``secret`` (edited, forged, another class's or another secret's)."""
    refused = f"the override log {path} is refused"
    try:
        if not path.is_file() or path.is_symlink():
            raise FatalError(f"{refused}: it is not a regular file")
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise FatalError(f"cannot read the override log {path}: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise FatalError(f"{refused}: it is larger than {MAX_BYTES // 2**20} MiB")
    try:
        doc = json.loads(data)
        rows, mac = doc["overrides"], str(doc["hmac_sha256"])
        ok_shape = doc["format"] == FORMAT and isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: brackets nested past the parser
        ok_shape = False
    if not ok_shape:
        raise FatalError(f"{refused}: it is not a {FORMAT} file")
    if doc["assignment"] != assignment_id:
        raise FatalError(f"{refused}: it is the log of {str(doc['assignment'])[:80]!r}, not of {assignment_id!r}")
    want = hmac.new(_key(secret, assignment_id), _body(assignment_id, rows), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, mac):
        raise FatalError(f"{refused}: its signature does not match (it was changed by someone without the "
                         "grading secret, or signed with another GRADER_SECRET)")
    return rows


def _same(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in set(a) | set(b))


def _shown(row: dict) -> str:
    what = "undo" if row["action"] == "undo" else f"{row['points']:g}"
    return f"{row['student']} {row['task']}: {what} by {row['by']} at {row['at']}"


def sync_log(gradebook, assignment_id: str, path: Path, secret: str) -> Synced:
    """Bring the gradebook and the log at ``path`` level and write the log again (signed with ``secret``).
    One must be the other with rows after: the log's extra rows are put back into the gradebook, the
    gradebook's extra rows go to the log.  When they differ otherwise (``FatalError``) nothing is changed."""
    path = Path(path)
    had = path.exists() or path.is_symlink()
    logged = read_log(path, assignment_id, secret) if had else []
    mine = gradebook.override_log(assignment_id)
    n = min(len(logged), len(mine))
    differ = next((i for i in range(n) if not _same(logged[i], mine[i])), None)
    if differ is not None:
        raise FatalError(f"the override log {path} and the gradebook disagree from their override {differ + 1}: "
                         f"the log has {_shown(logged[differ])}, the gradebook {_shown(mine[differ])}. Neither was "
                         "changed.", hint="Keep the one that is right: delete the log (the gradebook's overrides are "
                                         "logged again) or the gradebook (the log's are put back)")
    put_back = logged[n:]
    if put_back:
        bad = [r for r in put_back if set(r) != set(gradebook.LOGGED)]
        if bad:
            raise FatalError(f"the override log {path} is refused: a row has the fields {sorted(bad[0])}")
        gradebook.append_overrides(assignment_id, put_back)
    rows = gradebook.override_log(assignment_id)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(log_text(assignment_id, rows, secret))
        os.replace(tmp, path)
    except OSError as e:
        raise FatalError(f"cannot write the override log {path}: {e.strerror or e}") from None
    return Synced(put_back=put_back, logged=len(rows) - len(logged), total=len(rows), had_log=had)


def sync_override_log(log: Path, out_dir: Path, *, db_url: str | None = None,
                      assignment_id: str | None = None) -> Synced:
    """``grader override-log``: ``sync_log`` on the gradebook ``grader export`` would find, signed with the
    grading secret (``$GRADER_SECRET`` or the gradebook folder's); the pages and default exports of the students
    whose overrides were put back are drawn again, as ``grader override`` does."""
    from contextlib import nullcontext

    from ..api import _assignment_for_pages, _refresh_exports, open_gradebook
    from ..evaluate.heldout import SECRET_ENV, resolve_secret
    from ..pipeline import refresh_reports
    from ..store import OutputLock

    with open_gradebook(out_dir, db_url=db_url, assignment_id=assignment_id) as (gradebook, aid, folder):
        secret = resolve_secret(folder, create=False)
        if secret is None:
            raise FatalError(f"the override log is signed with the grading secret, and there is none: set "
                             f"{SECRET_ENV} (or keep {folder}/.grader-secret).")
        pages, assignment, _ = _assignment_for_pages(gradebook, aid, folder, None)
        with OutputLock(pages) if pages is not None else nullcontext():
            done = sync_log(gradebook, aid, log, secret.value)
            if done.put_back:
                if assignment is not None:
                    refresh_reports(assignment, pages, gradebook,
                                    pages=sorted({row["student"] for row in done.put_back}))
                _refresh_exports(gradebook, aid, folder / "export")
    return done
