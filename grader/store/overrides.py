"""Overrides: a TA's score for a task, put over the grader's own, with the reason and who gave it.

``apply_overrides`` is the one place an override changes a result (``StudentResult.to_json()``): the task
keeps the grader's own score, status and message under ``override.automatic``, and applying again starts
from those; ``needs_review`` says the grader's score changed since the override was made.
The record's shape and when the gradebook applies it: docs/design/store.md.
"""
from __future__ import annotations

import math

from ..records import StudentResult

#: scores closer than this are the same score
EPSILON = 1e-9


def override_status(points: float, max_score: float, automatic: dict) -> str:
    """The status an overridden task shows: the grader's own when the TA gave the grader's score, else what
    the points say (full marks 'passed', none 'failed', anything between 'partial')."""
    if abs(points - automatic["score"]) <= EPSILON:
        return automatic["status"]
    if points >= max_score - EPSILON:
        return "passed"
    return "failed" if points <= EPSILON else "partial"


def describe(override: dict, max_score: float) -> str:
    """The override in one sentence, as every report and export shows it before the grader's own message."""
    auto, replaced = override["automatic"], override["replaced"]
    text = (f"Score set on review by {override['by']} ({override['at'][:10]}): {override['reason']} "
            f"(the grader's score: {auto['score']:g} of {max_score:g}, {auto['status']}).")
    if override["needs_review"]:
        text += (f" Needs review: the grader's score was {replaced['score']:g} when this was decided and is "
                 f"{auto['score']:g} after a re-grade.")
    return text


def _restore(payload: dict) -> None:
    """Put the grader's own scores back (undo an earlier ``apply_overrides``)."""
    for task in payload["tasks"]:
        old = task.pop("override", None)
        if old is not None:
            task.update(score=old["automatic"]["score"], status=old["automatic"]["status"],
                        message=old["automatic"]["message"])
    automatic = payload.pop("automatic", None)
    if automatic is not None:
        payload["score"] = automatic["score"]
        payload.pop("grade", None)
        if automatic.get("grade") is not None:
            payload["grade"] = automatic["grade"]


def apply_overrides(payload: dict, overrides: dict[str, dict], bands: list | None) -> dict:
    """``payload`` (a result's JSON, changed in place and returned) with ``overrides`` put over it.

    ``overrides``: task id -> the override in force, ``{points, by, at, reason, replaced_score,
    replaced_status}`` (a gradebook row).  ``bands``: the assignment's grade bands ``[[letter, minimum
    percent], ...]`` for the letter of the new total; None when not known (the letter is then the grader's)."""
    _restore(payload)
    applied = False
    for task in payload["tasks"]:
        row = overrides.get(task["id"])
        if row is None:
            continue
        automatic = {"score": task["score"], "status": task["status"], "message": task["message"]}
        override = {"points": row["points"], "by": row["by"], "at": row["at"], "reason": row["reason"],
                    "replaced": {"score": row["replaced_score"], "status": row["replaced_status"]},
                    "automatic": automatic,
                    "needs_review": abs(automatic["score"] - row["replaced_score"]) > EPSILON}
        task["override"] = override
        task["score"] = row["points"]
        task["status"] = override_status(row["points"], task["max_score"], automatic)
        task["message"] = f"{describe(override, task['max_score'])} {automatic['message']}".strip()
        applied = True
    if applied:
        payload["automatic"] = {"score": payload["score"], "grade": payload.get("grade")}
        max_score = payload["max_score"]
        payload["score"] = round(min(math.fsum(t["score"] for t in payload["tasks"]), max_score), 2)
        if bands and max_score:
            from ..spec.model import GradeBands

            payload["grade"] = GradeBands(tuple((str(b[0]), float(b[1])) for b in bands)).letter(
                100 * payload["score"] / max_score)
    return payload


def outcome(payload: dict) -> str:
    """The result in one word (``StudentResult.outcome``), for the gradebook's ``results.outcome``."""
    return StudentResult.from_json(payload).outcome
