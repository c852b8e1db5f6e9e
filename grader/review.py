"""What needs a human: the list ``grader review`` shows, and identical work between students.

``fingerprints``: what would show that two students handed in the same work (model files' hashes, the
notebooks' own code statements, sketches of the models' weights), kept in the gradebook.
``identical_work``: students who share any of those, grouped; the grade is never touched.
``review_items``: what needs a human, ranked (``KINDS``); ``review_queue``: the same as typed rows.
What each compares and ranks: docs/design/review.md.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from .errors import SubmissionError
from .intake.formats import MODEL_FORMATS, NOTEBOOK, SCRIPT
from .assess import fmt_value
from .spec.model import METRICS, passes, relation

#: how an internal-error message starts, and a task's when the sandbox kept it from being graded (``records``)
from .records import COULD_NOT_GRADE, INTERNAL_ERROR  # noqa: E402,F401 (re-exported)
#: a metric this close to a threshold (a fraction of the threshold) is worth a human look
NEAR_THRESHOLD = 0.02
#: the kinds of fingerprint, and how a shared one is named
IDENTICAL = {"models": "identical model files", "weights": "identical model weights (within a tolerance)",
             "code": "identical code (comments, layout and the sheet's own code aside)"}
#: the kinds of item, in the order they are listed (most urgent first), and how urgent each is: "error" (no
#: grade could be given), "check" (a grade a TA should confirm), "note" (worth a look)
KINDS = ("internal error", "could not be graded", "run cut short", "override needs review", "training refused",
         "near threshold", "identical work", "re-trained credit", "inferred task")
SEVERITY = {"internal error": "error", "could not be graded": "error", "run cut short": "check",
            "override needs review": "check", "training refused": "check", "near threshold": "check",
            "identical work": "check", "re-trained credit": "note", "inferred task": "note"}
#: how a notebook's or script's cell ends when the grader's sandbox stopped it (a limit it set, not the student's
#: own exception): the run is cut short, its later models never made; a TA judges whether the limit was fair
CUT_SHORT = ("timeout", "died", "quota")


#: fewer tokens than this of a student's own code (the sheet's statements taken out) shows nothing shared
MIN_OWN_TOKENS = 12
#: weights whose sketches agree within this (relative to the weights' size) are the same weights: a copy
#: with its weights moved by a few ulps is found, an independent training never is
WEIGHTS_RTOL = 1e-4


def code_statements(source: str) -> list[str]:
    """What a cell's code does, one string per logical statement: Python's tokens without comments, blank
    lines, layout and docstrings (a statement that is a lone string), strings written one way (``'a'`` and
    ``"a"`` alike); IPython's magics and shell lines (``%``, ``!``) as IPython reads them.  A cell that is no
    Python gives its lines, whitespace normalised."""
    import ast
    import io
    import tokenize

    try:
        from IPython.core.inputtransformer2 import TransformerManager

        source = TransformerManager().transform_cell(source)
    except Exception:  # not IPython's either: tokenize says so below
        pass
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING,
            tokenize.ENDMARKER}
    statements, current = [], []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in skip:
                continue
            if tok.type == tokenize.NEWLINE:
                if current and not all(kind == tokenize.STRING for kind, _ in current):  # a docstring: dropped
                    statements.append(" ".join(text for _, text in current))
                current = []
                continue
            text = tok.string
            if tok.type == tokenize.STRING:
                try:
                    text = repr(ast.literal_eval(text))
                except (ValueError, SyntaxError):
                    pass  # an f-string: as written
            current.append((tok.type, text))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return [" ".join(line.split()) for line in source.splitlines() if line.strip()]
    if current and not all(kind == tokenize.STRING for kind, _ in current):
        statements.append(" ".join(text for _, text in current))
    return statements


def sheet_statements(assignment) -> frozenset[str]:
    """The statements of the sheet's own code: every code cell of the notebooks in the assignment folder
    (the reference notebook, and the sheet's where the TA keeps it there).  Students repeat them by design."""
    root = getattr(assignment, "root", None)
    paths = sorted(root.glob("*.ipynb")) if root else []
    return _sheet_statements(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths))


@functools.lru_cache(maxsize=4)
def _sheet_statements(notebooks: tuple) -> frozenset[str]:
    """``sheet_statements`` of these notebooks (path, mtime, size: read again when one changes)."""
    import nbformat

    found: set[str] = set()
    for path, _, _ in notebooks:
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:  # the TA's file: a broken one adds nothing
            continue
        for cell in nb.cells:
            if cell.cell_type == "code":
                found.update(code_statements(str(cell.source)))
    return frozenset(found)


def code_digest(file, sheet: frozenset[str] = frozenset()) -> str | None:
    """The SHA-256 of what a notebook's or script's own code does (``intake.SubmittedFile``): its
    ``code_statements`` in order, each statement of the sheet's own code (``sheet``) taken out; None when
    it cannot be read or holds fewer than ``MIN_OWN_TOKENS`` tokens of its own.  Metadata, outputs,
    comments, docstrings and layout never count."""
    from .execute import read_notebook

    try:
        nb = read_notebook(file)
    except SubmissionError:
        return None
    own = [st for cell in nb.cells if cell.cell_type == "code" for st in code_statements(str(cell.source))
           if st not in sheet]
    if sum(len(st.split(" ")) for st in own) < MIN_OWN_TOKENS:
        return None
    return hashlib.sha256("\n".join(own).encode("utf-8", "surrogatepass")).hexdigest()


def _weights_close(a: dict, b: dict) -> bool:
    """Whether two weight sketches (``evaluate.worker.weights_sketch``) are of the same weights, up to
    ``WEIGHTS_RTOL`` of their size."""
    if a.get("shapes") != b.get("shapes"):
        return False
    va, vb = a.get("v") or [], b.get("v") or []
    scale = max(float(a.get("norm", 0)), float(b.get("norm", 0)), 1e-12)
    return len(va) == len(vb) > 0 and abs(float(a.get("norm", 0)) - float(b.get("norm", 0))) <= WEIGHTS_RTOL * scale \
        and all(abs(float(x) - float(y)) <= WEIGHTS_RTOL * scale for x, y in zip(va, vb))


def _near_weights(holders: dict, sketches: list[tuple[str, str, dict]]) -> None:
    """Add to ``holders`` one ``("weights", "near:<n>")`` entry per set of models whose sketches are close
    (``_weights_close``, joined transitively), compared only within one set of shapes."""
    by_shapes: dict[str, list[tuple[str, str, dict]]] = {}
    for entry in sketches:
        by_shapes.setdefault(repr(entry[2].get("shapes")), []).append(entry)
    n = 0
    for group in by_shapes.values():
        parent = list(range(len(group)))

        def root(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                if group[i][0] != group[j][0] and _weights_close(group[i][2], group[j][2]):
                    parent[root(j)] = root(i)
        for i, (sid, name, _) in enumerate(group):
            holders.setdefault(("weights", f"near:{n + root(i)}"), {}).setdefault(sid, []).append(name)
        n += len(group)


def fingerprints(assignment, submission, files: list[dict], measured, result) -> dict:
    """What shows identical work in one submission: ``{"models": {file: sha256}, "code": {file: sha256},
    "weights": {model: sketch}}``.  ``files``: ``store.keys.submission_hash``'s per-file hashes;
    ``measured``: its ``Measurements``; ``result``: the grader's own ``StudentResult`` (which task each
    model answered).  A model a notebook or script of nothing but the sheet's code made has no weights
    fingerprint: the sheet's own seeds make the same weights for everyone who runs it."""
    by_hand = {t.id for t in assignment.tasks if t.training == "hand_set"}
    task_of_file = {f.name: f.task for f in result.files}
    task_of_source = {t.source: t.id for t in result.tasks if t.source}
    hashes = {f["name"]: f for f in files}
    out: dict[str, dict] = {"models": {}, "code": {}, "weights": {}}
    sheet, sheet_only = sheet_statements(assignment), []
    for f in submission.files:
        if f.role != "submission":
            continue  # a scaling file or a helper module: the same for many students by design
        if f.format in MODEL_FORMATS:
            h = hashes.get(f.relative)
            if h and h["bytes"] > 0 and task_of_file.get(f.relative) not in by_hand:
                out["models"][f.relative] = h["sha256"]
        elif f.format in (NOTEBOOK, SCRIPT):
            digest = code_digest(f, sheet)
            if digest:
                out["code"][f.relative] = digest
            else:
                sheet_only.append(f.relative)
    for source, evaluation in measured.evaluated:
        if any(source.name.startswith(f"{nb}, ") or source.name.endswith(f"(saved by {nb})") for nb in sheet_only):
            continue  # made by the sheet's code alone
        digest = evaluation.weights_sketch or evaluation.weights_sha256  # near, or exact
        if digest and task_of_source.get(source.name) not in by_hand \
                and evaluation.made_by != "predict":
            out["weights"][source.name] = digest
    return out


def identical_work(identities: dict[str, dict | None], among=None) -> list[dict]:
    """Students who share a fingerprint: ``[{"students": [...], "evidence": [{"kind", "what", "files":
    {student: [names]}}]}]``, one group per set of students.  ``identities``: ``Gradebook.identities``;
    ``among``: only these students (all when None)."""
    holders: dict[tuple[str, str], dict[str, list[str]]] = {}
    sketches: list[tuple[str, str, dict]] = []
    for sid, identity in identities.items():
        if identity is None or (among is not None and sid not in among):
            continue
        for kind in IDENTICAL:
            for name, digest in (identity.get(kind) or {}).items():
                if isinstance(digest, dict):  # a weights sketch: compared within a tolerance below
                    sketches.append((sid, name, digest))
                else:
                    holders.setdefault((kind, digest), {}).setdefault(sid, []).append(name)
    _near_weights(holders, sketches)
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


def _inference(task: dict) -> str | None:
    """Why an inferred task is worth a look: its runner-up was nearly as likely (``score.match``, the
    ``inferred_close`` metric); None when the inference was clear.  A result scored before that metric was
    kept counts as close."""
    if not task.get("inferred"):
        return None
    close = task["metrics"].get("inferred_close")
    if close is None:  # scored by an older grader: the closeness is not known
        return _sentence(task["message"])
    return _sentence(task["message"]) if close else None


def _retrained(task: dict) -> str | None:
    """Why the task's credit came from the grader's re-training of the student's recipe, not the student's own
    run (``assess._recipe``: the best of the re-trainings reached a threshold the run missed), or None."""
    th = task.get("threshold") or {}
    metric = th.get("metric")
    own, best = task["metrics"].get(metric), task["metrics"].get(f"retrained_{metric}")
    if metric not in METRICS or own is None or best is None:
        return None
    for which in ("pass", "partial"):
        limit = th.get(which)
        if limit is not None and passes(metric, best, limit) and not passes(metric, own, limit):
            return (f"the student's own run: {metric} {fmt_value(metric, own)}, short of the {which} threshold "
                    f"({relation(metric)} {fmt_value(metric, limit)}); the grader's re-training of the recipe "
                    f"reached {fmt_value(metric, best)}: graded {task['status']}, {task['score']:g} of "
                    f"{task['max_score']:g}")
    return None


def review_items(results: list[dict], identical: list[dict], near: float = NEAR_THRESHOLD) -> list[dict]:
    """Everything that needs a human, as ``{"rank", "kind", "severity", "students", "task", "detail"}``, most
    urgent first (``KINDS``).  ``results``: the gradebook's results (overrides in force); ``identical``:
    ``identical_work``."""
    items = []

    def add(kind, students, task, detail):
        items.append({"kind": kind, "severity": SEVERITY[kind], "students": list(students), "task": task,
                      "detail": detail})

    for s in results:
        errors = [t for t in s["tasks"] if t["status"] == "error" and not t.get("override")]
        failed = [t for t in errors if t["message"].startswith(INTERNAL_ERROR)]
        if failed:
            add("internal error", [s["id"]], ", ".join(t["id"] for t in failed), _sentence(failed[0]["message"]))
        unrun = [t for t in errors if t not in failed]
        if unrun:  # the sandbox failed (re-run them), or a file the grader could not read: no grade either way
            add("could not be graded", [s["id"]], ", ".join(t["id"] for t in unrun), _sentence(unrun[0]["message"]))
        cut = [(nb.get("name", ""), f) for nb in s.get("notebooks") or [] for f in nb.get("failures") or []
               if f.get("status") in CUT_SHORT]
        # listed until a TA has decided every task it may have cost (each one not passed is overridden)
        if cut and not all(t.get("override") for t in s["tasks"] if t["status"] != "passed"):
            name, f = cut[0]
            more = f" (and {len(cut) - 1} more cell(s) stopped)" if len(cut) > 1 else ""
            add("run cut short", [s["id"]], None,
                f"{name}, cell {f.get('cell')}: {_sentence(str(f.get('explanation') or f.get('status')))}{more}")
        for t in s["tasks"]:
            override = t.get("override")
            if override:
                if override["needs_review"]:
                    add("override needs review", [s["id"]], t["id"],
                        f"set to {override['points']:g} by {override['by']} ({override['at'][:10]}: "
                        f"{override['reason'] or 'no reason given'}); the grader's score was "
                        f"{override['replaced']['score']:g} then and is {override['automatic']['score']:g} now")
                continue  # otherwise a TA has decided this task
            if t["metrics"].get("training_refused"):
                add("training refused", [s["id"]], t["id"], _sentence(t["message"], "No credit"))
            reason = _near(t, near) if t["status"] not in ("missing", "error") else None
            if reason:
                add("near threshold", [s["id"]], t["id"], reason)
            retrained = _retrained(t) if t["status"] not in ("missing", "error") else None
            if retrained:
                add("re-trained credit", [s["id"]], t["id"], retrained)
            close = _inference(t) if t["status"] != "error" else None
            if close:
                add("inferred task", [s["id"]], t["id"], close)
    for group in identical:
        add("identical work", group["students"], None, "; ".join(describe_evidence(e) for e in group["evidence"]))
    order = {kind: i for i, kind in enumerate(KINDS)}
    items.sort(key=lambda i: (order[i["kind"]], i["students"], i["task"] or ""))
    return [{"rank": n, **item} for n, item in enumerate(items, 1)]


@dataclass(frozen=True)
class ReviewRow:
    """One thing a TA should look at, as ``review_queue`` ranks it."""

    rank: int  # 1 is the most urgent
    students: tuple[str, ...]  # one student, or the group that shares identical work
    task: str | None  # the task id(s), comma-separated; None for identical work
    kind: str  # one of ``KINDS``
    reason: str  # what a TA reads: why it is listed
    severity: str  # "error", "check" or "note" (``SEVERITY``)

    @property
    def student(self) -> str:
        """The student (or the students, comma-separated) it is about."""
        return ", ".join(self.students)


def review_rows(items: list[dict]) -> list[ReviewRow]:
    """``review_items``' items as ``ReviewRow``s."""
    return [ReviewRow(i["rank"], tuple(i["students"]), i["task"], i["kind"], i["detail"], i["severity"])
            for i in items]


def review_queue(gradebook, assignment_id: str, near: float = NEAR_THRESHOLD) -> list[ReviewRow]:
    """What needs a human in one assignment of an open ``store.Gradebook``, ranked (what ``grader review``
    lists): the overrides in force, identical work among the students' current submissions."""
    identical = identical_work(gradebook.identities(assignment_id))
    return review_rows(review_items(gradebook.results(assignment_id), identical, near))
