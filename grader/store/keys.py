"""Content hashes that decide what must be done again: a key per stage.

``measure_key``: what measuring read (the submission's bytes, the spec's measuring settings, the assignment's
Python files, the calibrated timings the time limits rest on, the seeds, the measuring code, the versions of
what trains and evaluates: Keras, TensorFlow, JAX, NumPy, h5py, Python's minor).
``retrain_key``: what re-training read (the recipes planned, their tasks, K and pass thresholds, its settings
and code), stored with the measurements.  ``score_key``: the measure key plus what scoring read (points,
thresholds, the scoring code).  Report code is in none: a changed template re-renders pages
(``REPORTING_CODE``).
Why: docs/design/store.md and docs/design/retrain.md.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from .. import untrusted, versions


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def submission_hash(submission) -> tuple[str, list[dict]]:
    """(hash of the whole submission, [{name, sha256, bytes}] per file)."""
    files = []
    for f in sorted(submission.files, key=lambda f: f.relative):
        try:
            digest, size = untrusted.sha256_relative(f.base, f.relative)
        except (OSError, untrusted.Refused) as e:  # vanished, replaced or unreadable since intake
            digest, size = f"unreadable:{type(e).__name__}", -1
        files.append({"name": f.relative, "sha256": digest, "bytes": size})
    problems = sorted(p.explain() for p in submission.problems)
    return _sha(json.dumps(files, sort_keys=True), *problems), files


#: the grader's code that changes what is measured (reading, running, taking, evaluating): a change re-measures
MEASURING_CODE = ("intake", "execute", "harvest", "evaluate", "measure", "retrain", "spec", "keras_io.py",
                  "untrusted.py", "errors.py", "records.py")
#: modules that measuring or scoring imports but that no key holds, and why no measurement or score depends on
#: their code (``tests/test_stages_keys.py`` holds that every other module they import is keyed)
UNKEYED_CODE = {
    "__init__.py": "the package's version, keyed by build_id",
    "logs.py": "where tracebacks and library output go",
    "versions.py": "reads the versions, which measure keys hold by value (measured_versions)",
    "speed_probe.py": "the machine's speed now, noise the keys leave out on purpose (time_limit_basis)",
    "executed.py": "the notebook as it ran, kept for its page (REPORTING_CODE), no part of what is measured",
    "textsafe.py": "escapes text for the page of the notebook as it ran (REPORTING_CODE)",
}
#: the code that decides which recipes are re-trained, and how many times: a change re-trains
RETRAINING_CODE = ("retrain", "assess.py")
#: the code that turns measurements into points: a change re-scores from the stored measurements
SCORING_CODE = ("score", "assess.py")
#: the code and templates that draw the pages (the report, the notebook as it ran, the words of review, the
#: escaping, the numbers' format and the records the pages read): a change re-renders them, nothing more
REPORTING_CODE = ("report", "executed.py", "serve/templates", "review.py", "textsafe.py", "assess.py", "records.py")


def code_files(parts: tuple[str, ...]) -> list[Path]:
    """The grader's own source files and templates under ``parts`` (packages, folders or modules of ``grader``)."""
    root = Path(__file__).resolve().parents[1]
    out = []
    for part in parts:
        base = root / part
        paths = sorted(base.rglob("*")) if base.is_dir() else [base]
        out += [p for p in paths if p.suffix in (".py", ".j2", ".css", ".html") and "__pycache__" not in p.parts]
    return out


@lru_cache(maxsize=None)
def code_hash(parts: tuple[str, ...]) -> str:
    """A hash of the grader's own source files under ``parts`` (``code_files``)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in code_files(parts):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def build_id() -> str:
    """The grader's version and a hash of its measuring code: a change there measures again; a change to
    the report templates or the exports does not."""
    from .. import __version__

    return f"{__version__}+{code_hash(MEASURING_CODE)}"


def _assignment_files(assignment) -> list[bytes]:
    root = Path(assignment.root)
    out = []
    for path in sorted(root.glob("*.py")):
        out += [path.name.encode(), path.read_bytes()]
    return out


def measured_versions(found: dict | None = None) -> str:
    """The versions a measurement depends on (``versions.current()``, or ``found``: a batch's), for the measure
    key: every package a metric depends on, exactly, and Python's major.minor (a patch release changes no
    metric, as ``versions.mismatch`` holds too)."""
    found = versions.current() if found is None else found
    kept = {k: v for k, v in found.items() if k != "python"}
    kept["python"] = ".".join(str(found.get("python", "")).split(".")[:2])
    return json.dumps(kept, sort_keys=True)


def measure_fingerprint(assignment, seeds: dict[str, int], grading_versions: dict | None = None) -> str:
    """What every student's measure key shares (``measure_key``); ``grading_versions``: the batch's
    ``versions.current()`` (read now when None)."""
    tasks = [(t.id, t.kind, t.dataset, t.names, t.file_names, t.file_format,
              t.architecture.inputs if t.architecture else None) for t in assignment.tasks]
    heldout_files = [file_sha256(ds.heldout_file) for _, ds in sorted(assignment.datasets.items())
                     if ds.heldout_file is not None]  # a replaced unreleased dataset means measuring again
    preprocessing = [(t.id, t.preprocessing) for t in assignment.tasks]
    return _sha(assignment.id, repr(sorted(assignment.datasets.items())), repr(assignment.limits),
                repr(assignment.notebooks), repr(assignment.intake), repr(tasks), repr(preprocessing),
                *_assignment_files(assignment), *heldout_files, json.dumps(sorted(seeds.items())), build_id(),
                *time_limit_basis(assignment), measured_versions(grading_versions))


def time_limit_basis(assignment) -> tuple:
    """What a notebook's time limits rest on, for the measure key: the spec's settings (factors, minimums,
    maximums, the mode: in ``repr(assignment.notebooks)``) and the calibrated timings (``Timings.basis``: the
    reference's times and the probe's reading at calibration).  Never the speed probe's reading at grading
    time: it is noise around the same machine (a few percent from one batch to the next), and keying on it
    would run a whole class again for nothing.  A limit is meant as the same budget of work on any machine
    (``factor x reference time``, in the probe's units); a re-calibration of the timings or a changed
    factor changes that budget, and so measures again."""
    timings = assignment.timings
    if assignment.notebooks.time_limits != "reference" or timings is None:
        return ()  # fixed limits: the settings alone decide, and they are keyed already
    return ("time-limits", repr(timings.basis()))


def score_fingerprint(assignment) -> str:
    parts = [Path(assignment.spec_path).read_bytes(), code_hash(SCORING_CODE)]
    if assignment.calibration_path and Path(assignment.calibration_path).exists():
        parts.append(Path(assignment.calibration_path).read_bytes())
    return _sha(*parts)


def retrain_key(assignment, plan_inputs: list) -> str:
    """What re-training read for one student: the recipes planned, their tasks, K and pass thresholds
    (``retrain.plan.plan_inputs``), the re-training settings and code.  Stored with the measurements: a
    re-score whose plan reads otherwise re-trains (so measures) again, any other only re-scores."""
    return _sha("retrain", json.dumps(plan_inputs, sort_keys=True), repr(assignment.limits.retraining),
                code_hash(RETRAINING_CODE))


def measure_key(content: str, measure_fp: str) -> str:
    return _sha("measure", content, measure_fp)


def score_key(measure: str, score_fp: str) -> str:
    return _sha("score", measure, score_fp)
