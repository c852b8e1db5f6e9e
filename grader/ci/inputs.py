"""The inputs of a score override (student, task, points, reason), checked before anything is overridden:
an id with a new line or another control character, a bidirectional control, or past ``MAX_ID`` characters
is refused with a message saying which input and why (the input itself is shown escaped).  One check for
both paths: the manual CI run (``problems``, before the workflow builds `grader override`'s command line;
the ids follow ``--``, so one beginning with '-' is an id, never an option) and the local `grader override`
(``override_problems``).  ``python -P -m grader.ci.inputs`` reads them from the environment (STUDENT, TASK,
POINTS, REASON) and exits 1, printing GitHub error annotations, when one is refused.
"""
from __future__ import annotations

import math
import os
import sys
import unicodedata

#: an id longer than this is refused (a student's folder name or a task id is a few dozen characters)
MAX_ID = 200
MAX_REASON = 2000
_NAMES = {"\n": "a new line", "\r": "a carriage return", "\t": "a tab", "\0": "a NUL byte", "\x1b": "an escape"}


def _shown(text: str) -> str:
    from ..textsafe import terminal

    return terminal(text[:60] + ("..." if len(text) > 60 else ""))


def _bad_char(text: str, *, allow: str = "") -> str | None:
    for ch in text:
        if ch not in allow and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            if "\udc80" <= ch <= "\udcff":  # a byte of a command line that is not UTF-8
                return f"the byte 0x{ord(ch) - 0xdc00:02X}, which is not UTF-8 text"
            return _NAMES.get(ch, f"the control character U+{ord(ch):04X}")
    return None


def id_problem(what: str, value: str) -> str | None:
    """Why ``value`` is refused as the ``what`` of an override (``student``, ``task``), or None.  A student
    whose folder name holds a control character is given as the reports show it (``\\x1b`` for an escape:
    ``api.override_score`` finds her by that form)."""
    if not value:
        return f"the {what} is empty: give the {what} to override"
    if len(value) > MAX_ID:
        return f"the {what} is {len(value)} characters long (at most {MAX_ID}): {_shown(value)}"
    if (bad := _bad_char(value)) is not None:
        how = " (give a student's id as the reports show it: \\x1b for an escape)" if what == "student" else ""
        return f"the {what} {_shown(value)} holds {bad}{how}"
    if value != value.strip():
        return f"the {what} {_shown(value)} begins or ends with a space"
    return None


def reason_problem(reason: str, *, allow: str = "\t") -> str | None:
    """Why ``reason`` is refused (past ``MAX_REASON`` characters, or a control character but ``allow``)."""
    if len(reason) > MAX_REASON:
        return f"the reason is {len(reason)} characters long (at most {MAX_REASON})"
    if (bad := _bad_char(reason, allow=allow)) is not None:
        return f"the reason holds {bad}"
    return None


def problems(student: str, task: str, points: str, reason: str) -> list[str]:
    """Why these inputs of the manual CI run are refused (empty: they may be passed to `grader override`)."""
    found = [p for p in (id_problem("student", student), id_problem("task", task)) if p]
    if points != "undo":
        try:
            number = float(points)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            found.append(f"the points {_shown(points)} are not a number (or 'undo')")
    if (bad := reason_problem(reason)) is not None:
        found.append(bad)
    return found


def override_problems(student: str, task: str, reason: str | None, by: str | None) -> list[str]:
    """Why the local `grader override`'s arguments are refused: the ids as in CI; the reason may hold line
    breaks (the gradebook keeps it on one line) but no other control; ``--by``, a name, is checked as an id."""
    found = [p for p in (id_problem("student", student), id_problem("task", task)) if p]
    if reason is not None and (bad := reason_problem(reason, allow="\t\n\r")) is not None:
        found.append(bad)
    if by is not None and (bad := id_problem("name given with --by", by)) is not None:
        found.append(bad)
    return found


def main() -> int:
    env = os.environ
    found = problems(env.get("STUDENT", ""), env.get("TASK", ""), env.get("POINTS", ""), env.get("REASON", ""))
    for problem in found:
        print(f"::error::Nothing was overridden: {problem}.".replace("%", "%25"))  # GitHub decodes %XX
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
