"""Gradescope's autograder: the bundle a course uploads, and the run inside Gradescope's container.

``build_bundle(assignment_dir, out_zip)`` writes the zip Gradescope's
"autograder configuration" takes:

* ``setup.sh`` (run once, as root, when Gradescope builds the image): installs
  bubblewrap and a Python virtual environment holding *this* grader, from the
  wheel inside the bundle (a pinned source: the bundle carries the exact code
  that made it; its dependencies come from the package index);
* ``run_autograder`` (run for every submission): ``grader gradescope run``;
* ``assignment/``: the spec, its calibration and data generators (no reference
  solution: grading does not need it);
* ``grader-secret``: the grading secret (the bundle is seen by staff only);
* ``gradescope.toml``: the per-submission time budget, within Gradescope's
  limit, and the memory the container should be given.

``run_autograder(root)`` grades ``root/submission`` exactly as ``grader
grade`` grades one student (same measuring, same scoring, same seeds from the
same secret) and writes ``root/results/results.json`` in Gradescope's
documented schema: ``score``, ``execution_time``, ``output`` (the feedback, as
HTML), ``output_format``, ``visibility``, ``stdout_visibility`` and ``tests``
(``name``, ``number``, ``score``, ``max_score``, ``status``, ``output``,
``output_format``, ``visibility``, ``execution_time``, ``tags``).
"""
from __future__ import annotations

import dataclasses
import html
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

from .errors import FatalError, OutputError
from .kit import build_kit

#: Gradescope's per-submission time limit is set by staff (10 minutes unless raised); the grader keeps to a
#: budget below it so that results are always written
DEFAULT_BUDGET_S = 540
#: the container memory the grader needs (TensorFlow's evaluation worker and a notebook kernel at once)
RECOMMENDED_MEMORY_GB = 4

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
    bubblewrap util-linux python3 python3-venv python3-pip >/dev/null
python3 -m venv /autograder/grader-env
/autograder/grader-env/bin/pip install --quiet --upgrade pip
/autograder/grader-env/bin/pip install --quiet /autograder/source/wheels/*.whl   # this bundle's own grader
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission: grade /autograder/submission into /autograder/results/results.json.
exec "${GRADER_BIN:-/autograder/grader-env/bin/grader}" gradescope run --root "${GRADER_AUTOGRADER_ROOT:-/autograder}"
"""


def build_bundle(assignment_dir, out_zip, *, secret: str | None = None, budget_s: float = DEFAULT_BUDGET_S) -> Path:
    """Write the autograder zip for ``assignment_dir``; a new grading secret unless ``secret`` is given."""
    out_zip = Path(out_zip)
    with tempfile.TemporaryDirectory(prefix="grader-bundle-") as tmp:
        tmp = Path(tmp)
        build_kit(assignment_dir, tmp / "assignment")
        wheels = tmp / "wheels"
        project = Path(__file__).resolve().parents[1]
        if not (project / "pyproject.toml").is_file():
            raise FatalError(f"cannot build the grader's wheel: {project} is not a source checkout of grader")
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                               "-w", str(wheels), str(project)], capture_output=True, text=True)
        if done.returncode != 0:
            raise FatalError(f"cannot build the grader's wheel: {done.stderr.strip()[-400:]}")
        (tmp / "grader-secret").write_text((secret or secrets.token_hex(32)) + "\n")
        (tmp / "gradescope.toml").write_text(f"# the grader's budget per submission, within Gradescope's limit\n"
                                             f"budget_s = {float(budget_s)}\n"
                                             f"recommended_memory_gb = {RECOMMENDED_MEMORY_GB}\n")
        for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER)):
            (tmp / name).write_text(text)
        try:
            out_zip.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(out_zip, "w", zipfile.ZIP_DEFLATED) as z:
                for path in sorted(tmp.rglob("*")):
                    if path.is_file():
                        info = zipfile.ZipInfo.from_file(path, path.relative_to(tmp).as_posix())
                        info.external_attr = (0o755 if path.name in ("setup.sh", "run_autograder") else 0o644) << 16
                        z.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
        except OSError as e:
            raise OutputError(f"cannot write {out_zip}: {e.strerror or e}") from None
    return out_zip


def _budgeted(assignment, budget_s: float):
    """The spec with the notebook's time limits inside the per-submission budget (evaluation needs the rest)."""
    nb = assignment.notebooks
    notebook = min(nb.notebook_timeout_s, 0.75 * budget_s)
    return dataclasses.replace(assignment, notebooks=dataclasses.replace(
        nb, notebook_timeout_s=notebook, cell_timeout_s=min(nb.cell_timeout_s, notebook)))


def run_autograder(root) -> Path:
    """Grade ``root/submission`` with the bundle in ``root/source``; writes and returns ``results.json``."""
    from .evaluate import Evaluator, dataset_seeds
    from .intake import collect_one
    from .measure.student import measure_student
    from .report import atomic_write
    from .score import score_student
    from .textsafe import json_text, shown
    from .spec import load_assignment

    started = time.monotonic()
    root = Path(root)
    source = root / "source"
    settings = tomllib.loads((source / "gradescope.toml").read_text())
    assignment = _budgeted(load_assignment(source / "assignment"), float(settings.get("budget_s", DEFAULT_BUDGET_S)))
    secret = (source / "grader-secret").read_text().strip()
    submission = collect_one(root / "submission", assignment, "submission")
    with Evaluator(assignment, dataset_seeds(assignment, secret)) as evaluator:
        result = score_student(assignment, measure_student(assignment, submission, evaluator))
    data = results_json(result.to_json(), time.monotonic() - started)
    # every string is shown to the student: controls and bidi characters as escapes (textsafe.shown)
    return atomic_write(root / "results" / "results.json", json_text(shown(data), indent=2) + "\n")


def results_json(student: dict, seconds: float, visibility: str = "visible") -> dict:
    """Gradescope's ``results.json`` for one graded student (``StudentResult.to_json()``)."""
    tests = [{"name": f"Task {t['id']}: {t.get('title', '')}".rstrip(": "), "number": t["id"],
              "score": t["score"], "max_score": t["max_score"],
              "status": "passed" if t["status"] == "passed" else "failed",
              "output": html.escape(t["message"]), "output_format": "html", "visibility": visibility,
              "tags": [t["status"]] + (["optional"] if t.get("optional") else [])}
             for t in student["tasks"]]
    for test in tests:
        test["execution_time"] = 0  # per-task times are not measured apart; the whole run's is at the top
    return {"score": student["score"], "execution_time": round(seconds, 1), "output": feedback_html(student),
            "output_format": "html", "visibility": visibility, "stdout_visibility": "hidden", "tests": tests}


def feedback_html(student: dict) -> str:
    """The student's feedback as an HTML fragment Gradescope shows above the tests (everything escaped)."""
    e = html.escape
    rows = "".join(f"<tr><td>{e(t['id'])}</td><td>{e(t['status'])}</td><td>{t['score']:g} / {t['max_score']:g}</td>"
                   f"<td>{e(t['message'])}</td></tr>" for t in student["tasks"])
    notes = "".join(f"<li>{e(n)}</li>" for n in student.get("notes", []))
    failures = "".join(f"<li>{e(nb['name'])}, cell {f['cell']}: {e(f['explanation'])}</li>"
                       for nb in student.get("notebooks", []) for f in nb.get("failures", []))
    grade = f", grade {e(student['grade'])}" if student.get("grade") else ""
    parts = [f"<p><strong>Score {student['score']:g} of {student['max_score']:g}{grade}.</strong></p>",
             f"<table><tr><th>task</th><th>status</th><th>points</th><th>what to do</th></tr>{rows}</table>"]
    if failures:
        parts.append(f"<p>Cells that failed:</p><ul>{failures}</ul>")
    if notes:
        parts.append(f"<p>Notes:</p><ul>{notes}</ul>")
    return "".join(parts)


def unpack(bundle: Path, root: Path) -> Path:
    """Lay a bundle out as Gradescope does (``root/source``): for running the autograder locally."""
    source = Path(root) / "source"
    if source.exists():
        shutil.rmtree(source)
    with zipfile.ZipFile(bundle) as z:
        z.extractall(source)
    for name in ("setup.sh", "run_autograder"):
        (source / name).chmod(0o755)
    return source
