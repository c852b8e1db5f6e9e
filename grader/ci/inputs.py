"""The inputs of a manual CI run that overrides a score (student, task, points, reason), checked before the
workflow builds `grader override`'s command line from them: an id with a new line or another control
character, a bidirectional control, or past ``MAX_ID`` characters is refused with a message saying which
input and why (the input itself is shown escaped).  The workflow passes ids after ``--``, so one beginning
with '-' is an id, never an option.  ``python -P -m grader.ci.inputs`` reads them from the environment
(STUDENT, TASK, POINTS, REASON) and exits 1, printing GitHub error annotations, when one is refused.
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
            return _NAMES.get(ch, f"the control character U+{ord(ch):04X}")
    return None


def problems(student: str, task: str, points: str, reason: str) -> list[str]:
    """Why these inputs are refused (empty: they may be passed to `grader override`)."""
    found = []
    for what, value in (("student", student), ("task", task)):
        if not value:
            found.append(f"the {what} is empty: give the {what} to override")
        elif len(value) > MAX_ID:
            found.append(f"the {what} is {len(value)} characters long (at most {MAX_ID}): {_shown(value)}")
        elif (bad := _bad_char(value)) is not None:
            found.append(f"the {what} {_shown(value)} holds {bad}, which no {what} id has")
        elif value != value.strip():
            found.append(f"the {what} {_shown(value)} begins or ends with a space")
    if points != "undo":
        try:
            number = float(points)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            found.append(f"the points {_shown(points)} are not a number (or 'undo')")
    if len(reason) > MAX_REASON:
        found.append(f"the reason is {len(reason)} characters long (at most {MAX_REASON})")
    elif (bad := _bad_char(reason, allow="\t")) is not None:
        found.append(f"the reason holds {bad}")
    return found


def main() -> int:
    env = os.environ
    found = problems(env.get("STUDENT", ""), env.get("TASK", ""), env.get("POINTS", ""), env.get("REASON", ""))
    for problem in found:
        print(f"::error::Nothing was overridden: {problem}.".replace("%", "%25"))  # GitHub decodes %XX
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
