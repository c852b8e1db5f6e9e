"""What needs a human: the list ``grader review`` shows, and identical work between students.

* ``fingerprints``: when a submission is recorded, what would show that two
  students handed in the same work, kept in the gradebook
  (``submissions.identity``): the SHA-256 of each submitted model file, of
  each notebook's or script's code with whitespace normalised (cells joined,
  runs of blanks made one, blank lines dropped, markdown left out, so a
  notebook and a script of the same code match), and of each evaluated
  model's weights when the evaluation worker reports a ``weights_sha256``.
  Models of tasks whose answer is set by hand (``training = "hand_set"``,
  1b's exact weights) are left out: every correct answer is the same.
* ``identical_work``: students who share any of those, grouped, with what
  they share.  Listed on the class page and by ``grader review``; the grade is
  never touched, a TA decides.
* ``review_items``: internal errors, overrides whose automatic score changed
  since (``needs_review``), refused training, metrics within a hair
  (``NEAR_THRESHOLD``) of a pass or partial threshold, inferred tasks, and
  identical work.  A task a TA has overridden is decided: only a changed
  automatic score brings it back.
"""
from __future__ import annotations

import hashlib

from .errors import SubmissionError
from .intake.formats import MODEL_FORMATS, NOTEBOOK, SCRIPT
from .score.assess import fmt_value

#: how every internal-error message starts (``pipeline._internal_error``): a grader failure, not the student's
INTERNAL_ERROR = "The grader failed on this submission"
#: a metric this close to a threshold (a fraction of the threshold) is worth a human look
NEAR_THRESHOLD = 0.02
#: the kinds of fingerprint, and how a shared one is named
IDENTICAL = {"models": "identical model files", "weights": "identical model weights",
             "code": "identical code (whitespace aside)"}
#: the kinds of item, in the order they are listed
KINDS = ("internal error", "override needs review", "training refused", "near threshold", "inferred task",
         "identical work")


def code_digest(file) -> str | None:
    """The SHA-256 of a notebook's or script's code (``intake.SubmittedFile``), whitespace normalised; None
    when it cannot be read or holds no code."""
    from .execute import read_notebook

    try:
        nb = read_notebook(file)
    except SubmissionError:
        return None
    lines = (" ".join(line.split()) for cell in nb.cells if cell.cell_type == "code"
             for line in str(cell.source).splitlines())
    text = "\n".join(line for line in lines if line)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest() if text else None


def fingerprints(assignment, submission, files: list[dict], measured, result) -> dict:
    """What shows identical work in one submission: ``{"models": {file: sha256}, "code": {file: sha256},
    "weights": {model: sha256}}``.  ``files``: ``store.keys.submission_hash``'s per-file hashes;
    ``measured``: its ``Measurements``; ``result``: the grader's own ``StudentResult`` (which task each
    model answered)."""
    by_hand = {t.id for t in assignment.tasks if t.training == "hand_set"}
    task_of_file = {f.name: f.task for f in result.files}
    task_of_source = {t.source: t.id for t in result.tasks if t.source}
    hashes = {f["name"]: f for f in files}
    out: dict[str, dict[str, str]] = {"models": {}, "code": {}, "weights": {}}
    for f in submission.files:
        if f.role != "submission":
            continue  # a scaling file or a helper module: the same for many students by design
        if f.format in MODEL_FORMATS:
            h = hashes.get(f.relative)
            if h and h["bytes"] > 0 and task_of_file.get(f.relative) not in by_hand:
                out["models"][f.relative] = h["sha256"]
        elif f.format in (NOTEBOOK, SCRIPT):
            digest = code_digest(f)
            if digest:
                out["code"][f.relative] = digest
    for source, evaluation in measured.evaluated:
        digest = evaluation.get("weights_sha256")
        if digest and task_of_source.get(source.name) not in by_hand \
                and (evaluation.get("provenance") or {}).get("made_by") != "predict":
            out["weights"][source.name] = digest
    return out


def identical_work(identities: dict[str, dict | None], among=None) -> list[dict]:
    """Students who share a fingerprint: ``[{"students": [...], "evidence": [{"kind", "what", "files":
    {student: [names]}}]}]``, one group per set of students.  ``identities``: ``Gradebook.identities``;
    ``among``: only these students (all when None)."""
    holders: dict[tuple[str, str], dict[str, list[str]]] = {}
    for sid, identity in identities.items():
        if identity is None or (among is not None and sid not in among):
            continue
        for kind in IDENTICAL:
            for name, digest in (identity.get(kind) or {}).items():
                holders.setdefault((kind, digest), {}).setdefault(sid, []).append(name)
    groups: dict[tuple[str, ...], list[dict]] = {}
    for (kind, _), files in holders.items():
        if len(files) > 1:
            students = tuple(sorted(files))
            groups.setdefault(students, []).append(
                {"kind": kind, "what": IDENTICAL[kind], "files": {s: sorted(files[s]) for s in students}})
    return [{"students": list(students), "evidence": sorted(evidence, key=lambda e: (e["kind"], repr(e["files"])))}
            for students, evidence in sorted(groups.items())]


def describe_evidence(evidence: dict) -> str:
    """One piece of shared work in words: ``identical model files: alice 1a.h5 = bob 1a.h5, 1c.h5``."""
    return f"{evidence['what']}: " + " = ".join(f"{s} {', '.join(names)}" for s, names in evidence["files"].items())


def _sentence(message: str, start: str | None = None, limit: int = 240) -> str:
    """The sentence of ``message`` that begins with ``start`` (the first when there is none), cut for a table."""
    if start and start in message:
        message = message[message.index(start):]
    end = message.find(". ")
    message = message[:end + 1] if end >= 0 else message
    return message if len(message) <= limit else message[:limit - 1].rstrip() + "…"


def _near(task: dict, near: float) -> str | None:
    """Why the task's metric is within ``near`` of a threshold, or None."""
    th = task.get("threshold") or {}
    metric = th.get("metric")
    values = [task["metrics"].get(key) for key in (metric, f"retrained_{metric}")]
    for value in (v for v in values if v is not None):
        for which in ("pass", "partial"):
            limit = th.get(which)
            if limit is not None and abs(value - limit) <= near * abs(limit):
                return (f"{metric} {fmt_value(metric, value)} is within {near:.0%} of the {which} threshold "
                        f"{fmt_value(metric, limit)}; graded {task['status']}, {task['score']:g} of "
                        f"{task['max_score']:g}")
    return None


def review_items(results: list[dict], identical: list[dict], near: float = NEAR_THRESHOLD) -> list[dict]:
    """Everything that needs a human, as ``{"kind", "students", "task", "detail"}`` in ``KINDS`` order.
    ``results``: the gradebook's results (overrides in force); ``identical``: ``identical_work``."""
    items = []

    def add(kind, students, task, detail):
        items.append({"kind": kind, "students": list(students), "task": task, "detail": detail})

    for s in results:
        failed = [t for t in s["tasks"] if t["status"] == "error" and t["message"].startswith(INTERNAL_ERROR)]
        if failed:
            add("internal error", [s["id"]], ", ".join(t["id"] for t in failed), _sentence(failed[0]["message"]))
        for t in s["tasks"]:
            override = t.get("override")
            if override:
                if override["needs_review"]:
                    add("override needs review", [s["id"]], t["id"],
                        f"set to {override['points']:g} by {override['by']} ({override['at'][:10]}: "
                        f"{override['reason']}); the grader's score was {override['replaced']['score']:g} then "
                        f"and is {override['automatic']['score']:g} now")
                continue  # otherwise a TA has decided this task
            if t["metrics"].get("training_refused"):
                add("training refused", [s["id"]], t["id"], _sentence(t["message"], "No credit"))
            reason = _near(t, near) if t["status"] not in ("missing", "error") else None
            if reason:
                add("near threshold", [s["id"]], t["id"], reason)
            if t.get("inferred"):
                add("inferred task", [s["id"]], t["id"], _sentence(t["message"]))
    for group in identical:
        add("identical work", group["students"], None, "; ".join(describe_evidence(e) for e in group["evidence"]))
    order = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(items, key=lambda i: (order[i["kind"]], i["students"], i["task"] or ""))
