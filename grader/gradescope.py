"""Gradescope's autograder: the bundle a course uploads, and the run inside Gradescope's container.

``build_bundle(assignment_dir, out_zip)`` writes the zip (``setup.sh``, ``run_autograder``, the assignment
without its solution, the secret, the pinned dependencies); ``run_autograder(root)`` grades
``root/submission`` in a ``GradingSession`` exactly as ``grader grade`` grades one student and writes
``root/results/results.json`` with the export's writer.  Why and what: docs/design/gradescope.md.
"""
from __future__ import annotations

import dataclasses
import html
import json
import platform
import secrets
import shutil
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

from . import versions
from .errors import FatalError, OutputError
from .kit import build_kit, build_wheel

#: Gradescope's per-submission time limit is set by staff (10 minutes unless raised); the grader keeps to a
#: budget below it so that results are always written
DEFAULT_BUDGET_S = 540
#: the container memory the grader needs (TensorFlow's evaluation worker and a notebook kernel at once)
RECOMMENDED_MEMORY_GB = 4

#: the Gradescope base image a bundle is made for; setup.sh runs as well on the others (20.04, 24.04)
GRADESCOPE_IMAGE = "Ubuntu 22.04 (x86-64)"
#: the glibc of the oldest Gradescope image (Ubuntu 20.04: 2.31): the newest manylinux wheels the lock may need
OLDEST_GLIBC = (2, 31)
#: the uv that provides Python where the image's python3 is another version, and installs the lock: from PyPI,
#: pinned by version and by the SHA-256 of its manylinux x86-64 wheel (checked by pip --require-hashes)
UV_VERSION = "0.13.9"
UV_WHEEL_SHA256 = "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19"
#: where setup.sh puts the grader's environment, and uv with any Python it provides
GRADER_ENV = "/autograder/grader-env"
GRADER_TOOLS = "/autograder/grader-tools"
LOCK_FILE = "requirements.lock"
EXECUTABLES = ("setup.sh", "provision_python.sh", "run_autograder")
#: the grading packages a lock names first in the build's message
_SHOWN_FIRST = ("keras", "jax", "jaxlib", "tensorflow", "tensorflow-cpu", "numpy", "h5py")

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image ({image}; 20.04 and 24.04 too).
set -euo pipefail
cd "$(dirname "$0")"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
    bubblewrap util-linux ca-certificates python3 python3-venv >/dev/null
# Python {python} (the bundle's build and calibration), in {env}; uv beside it in {tools}
GRADER_TOOLS={tools} ./provision_python.sh {python} {env}
uv={tools}/uv-env/bin/uv
# exactly the locked versions, nothing resolved here; then this bundle's own grader, and a check that nothing lacks
"$uv" pip install --quiet --python {env}/bin/python --no-deps --only-binary :all: -r {lock}
"$uv" pip install --quiet --python {env}/bin/python --no-deps ./wheels/*.whl
"$uv" pip check --python {env}/bin/python
{env}/bin/grader --version >/dev/null
"""

PROVISION_SH = """#!/usr/bin/env bash
# provision_python.sh VERSION ENV_DIR: make ENV_DIR a virtual environment of CPython VERSION (major.minor: the
# Python this bundle was built and calibrated with), with uv (pinned by version and hash, from PyPI) in
# $GRADER_TOOLS/uv-env.  The system python3 is used when it is VERSION; otherwise uv provides VERSION: a Python
# found on this machine, else a standalone CPython it downloads into $GRADER_TOOLS/python
# (UV_PYTHON_DOWNLOADS=never: only those found).  Needs python3 with venv (apt: python3 python3-venv).
set -euo pipefail
want="$1"
env_dir="$2"
here="$(cd "$(dirname "$0")" && pwd)"
tools="${GRADER_TOOLS:-$(dirname "$env_dir")/grader-tools}"
system="$(command -v python3 || true)"
if [ -z "$system" ]; then
    echo "provision_python: no python3 on PATH (install python3 and python3-venv)" >&2
    exit 1
fi
have="$("$system" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
mkdir -p "$tools"
"$system" -m venv "$tools/uv-env"
"$tools/uv-env/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \\
    --require-hashes -r "$here/uv-requirements.txt"
uv="$tools/uv-env/bin/uv"
export UV_PYTHON_INSTALL_DIR="$tools/python"
if [ "$have" = "$want" ]; then
    echo "provision_python: the system python3 ($system) is Python $have: the grader runs on it"
    "$uv" venv --quiet --clear --python "$system" "$env_dir"  # --clear: setup.sh may run again
else
    echo "provision_python: the system python3 ($system) is Python $have, the grader needs $want: uv provides it"
    "$uv" venv --quiet --clear --python "$want" "$env_dir"
fi
got="$("$env_dir/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$got" != "$want" ]; then
    echo "provision_python: $env_dir runs Python $got, not $want" >&2
    exit 1
fi
echo "provision_python: $env_dir runs Python $("$env_dir/bin/python" -c 'import platform; print(platform.python_version())')"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission: grade /autograder/submission into /autograder/results/results.json.
exec "${GRADER_BIN:-/autograder/grader-env/bin/grader}" gradescope run --root "${GRADER_AUTOGRADER_ROOT:-/autograder}"
"""


def manylinux_platforms(glibc: tuple[int, int] = OLDEST_GLIBC) -> list[str]:
    """The wheel platform tags a Linux x86-64 with ``glibc`` installs, newest first (pip's ``--platform``
    takes each literally, so a resolution for Gradescope's images names them all)."""
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(glibc[1], 4, -1)]
    legacy = {"manylinux_2_17_x86_64": "manylinux2014_x86_64", "manylinux_2_12_x86_64": "manylinux2010_x86_64",
              "manylinux_2_5_x86_64": "manylinux1_x86_64"}
    return [t for tag in tags for t in (tag, legacy.get(tag)) if t]


def _python_minor() -> str:
    return "%d.%d" % sys.version_info[:2]


def pinned_install(assignment_dir, project: Path) -> list[tuple[str, str]]:
    """The bundle's lock: the grader's dependencies (``project``'s pyproject.toml) and all they need, at this
    environment's exact versions.  Refused (``FatalError``) where Gradescope could not install it (not Linux
    x86-64), where this environment lacks one, or where the grading packages are not the versions the
    assignment's calibration recorded."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise FatalError(f"the bundle pins this environment's packages, and this is {sys.platform} "
                         f"{platform.machine()}: Gradescope runs Linux x86-64",
                         hint="build the bundle on Linux x86-64, in the environment the assignment was calibrated in")
    deps = tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]
    from .spec import load_assignment

    return versions.calibrated_pins(load_assignment(assignment_dir), deps, made="bundle")


def build_bundle(assignment_dir, out_zip, *, secret: str | None = None, budget_s: float = DEFAULT_BUDGET_S) -> Path:
    """Write the autograder zip for ``assignment_dir``; a new grading secret unless ``secret`` is given."""
    out_zip = Path(out_zip)
    project = Path(__file__).resolve().parents[1]
    if not (project / "pyproject.toml").is_file():
        raise FatalError(f"cannot build the grader's wheel: {project} is not a source checkout of grader")
    pins = pinned_install(assignment_dir, project)
    with tempfile.TemporaryDirectory(prefix="grader-bundle-") as tmp:
        tmp = Path(tmp)
        build_kit(assignment_dir, tmp / "assignment", grader=None)  # the bundle installs its own wheel
        wheels = tmp / "wheels"
        build_wheel(wheels)  # from a clean copy: a stale build/ in the checkout would add deleted modules
        (tmp / "grader-secret").write_text((secret or secrets.token_hex(32)) + "\n")
        (tmp / "gradescope.toml").write_text(f"# the grader's budget per submission, within Gradescope's limit\n"
                                             f"budget_s = {float(budget_s)}\n"
                                             f"recommended_memory_gb = {RECOMMENDED_MEMORY_GB}\n"
                                             f"# the image it was made for, and the Python setup.sh provides\n"
                                             f"image = {json.dumps(GRADESCOPE_IMAGE)}\n"
                                             f"python = {json.dumps(_python_minor())}\n")
        (tmp / LOCK_FILE).write_text(versions.lock_text(pins))
        (tmp / "uv-requirements.txt").write_text(f"uv=={UV_VERSION} --hash=sha256:{UV_WHEEL_SHA256}\n")
        setup = SETUP_SH.format(image=GRADESCOPE_IMAGE, python=_python_minor(), env=GRADER_ENV, tools=GRADER_TOOLS,
                                lock=LOCK_FILE)
        for name, text in (("setup.sh", setup), ("provision_python.sh", PROVISION_SH),
                           ("run_autograder", RUN_AUTOGRADER)):
            (tmp / name).write_text(text)
        try:
            out_zip.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(out_zip, "w", zipfile.ZIP_DEFLATED) as z:
                for path in sorted(tmp.rglob("*")):
                    if path.is_file():
                        info = zipfile.ZipInfo.from_file(path, path.relative_to(tmp).as_posix())
                        info.external_attr = (0o755 if path.name in EXECUTABLES else 0o644) << 16
                        z.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
        except OSError as e:
            raise OutputError(f"cannot write {out_zip}: {e.strerror or e}") from None
    return out_zip


def bundle_summary(bundle: Path) -> dict:
    """What a bundle installs, read from the zip: ``image``, ``python``, ``uv``, ``pins`` (``[(name, version)]``
    of its lock, the grading packages first) and ``calibrated`` (the versions its calibration recorded, or
    None): for the build's message."""
    with zipfile.ZipFile(bundle) as z:
        settings = tomllib.loads(z.read("gradescope.toml").decode())
        lines = z.read(LOCK_FILE).decode().splitlines()
        calibration = next((n for n in z.namelist() if n == "assignment/calibration.toml"), None)
        calibrated = versions.from_meta(tomllib.loads(z.read(calibration).decode()).get("meta")) \
            if calibration else None
    pins = [tuple(line.split("==", 1)) for line in lines if line and not line.startswith("#")]
    first = {name: i for i, name in enumerate(_SHOWN_FIRST)}
    pins.sort(key=lambda nv: (first.get(nv[0].lower().replace("_", "-"), len(first)), nv[0].lower()))
    return {"image": settings.get("image", GRADESCOPE_IMAGE), "python": settings.get("python"), "uv": UV_VERSION,
            "pins": pins, "calibrated": calibrated}


def _budgeted(assignment, budget_s: float):
    """The spec with the notebook's time limits inside the per-submission budget (evaluation needs the rest)."""
    nb = assignment.notebooks
    notebook = min(nb.notebook_timeout_s, 0.75 * budget_s)
    return dataclasses.replace(assignment, notebooks=dataclasses.replace(
        nb, notebook_timeout_s=notebook, cell_timeout_s=min(nb.cell_timeout_s, notebook)))


#: seconds of the budget kept back for scoring, writing results.json and stopping the workers
RESULTS_RESERVE_S = 20.0


def run_autograder(root) -> Path:
    """Grade ``root/submission`` with the bundle in ``root/source``; writes and returns ``results.json``.

    The sandbox is proven first (``sandbox.prove_isolation``): where it does not start, no student code runs
    (the tasks a notebook would answer could not be graded, and the feedback says why).  Everything -- the
    evaluation worker's start, the notebook and any re-run, loading, evaluation, re-training -- draws from one
    clock, the bundle's ``budget_s`` less ``RESULTS_RESERVE_S``.  ``results.json`` is written by the grader
    alone, last and atomically (a file already there is removed first: student code never sees
    ``results/``, and a forged one could not stand)."""
    from .evaluate import dataset_seeds
    from .execute.sandbox import prove_isolation
    from .export import gradescope_results, write_gradescope_results
    from .intake import collect_one
    from .session import GradingSession
    from .spec import load_assignment

    started = time.monotonic()
    root = Path(root)
    source, out = root / "source", root / "results" / "results.json"
    _clear(out)
    settings = tomllib.loads((source / "gradescope.toml").read_text())
    budget_s = float(settings.get("budget_s", DEFAULT_BUDGET_S))
    assignment = _budgeted(load_assignment(source / "assignment"), budget_s)
    mismatch = versions.mismatch(assignment.calibrated_versions, versions.current())
    if mismatch:  # for staff: Gradescope shows the autograder's output to them, not to students
        print(f"grader: warning: {mismatch}", file=sys.stderr)
    secret = (source / "grader-secret").read_text().strip()
    submission = collect_one(root / "submission", assignment, "submission")
    no_sandbox = prove_isolation() if submission.runs_code else None
    if no_sandbox:
        print(f"grader: {no_sandbox}", file=sys.stderr)
    clock = submission_clock(budget_s, started)
    try:
        with GradingSession(assignment, dataset_seeds(assignment, secret)) as session:
            measured = session.measure(submission, clock=clock)
        result = session.score(measured).to_json()
    except Exception as exc:  # a grader bug: the student is told, the traceback goes to the log (stderr)
        write_gradescope_results(out, gradescope_results(_internal_error(assignment, exc),
                                                         time.monotonic() - started))
        raise
    data = gradescope_results(result, time.monotonic() - started)
    if no_sandbox:
        data["output"] = (f"<p><strong>Your code was not run:</strong> this autograder cannot isolate student "
                          f"code on its machine, so it runs none ({html.escape(no_sandbox)}). The tasks your "
                          "notebook or script would answer could not be graded; this is not your code: course "
                          "staff must fix the autograder and re-run it.</p>") + data["output"]
    return write_gradescope_results(out, data)


def submission_clock(budget_s: float, started: float):
    """The one clock a Gradescope run's everything draws from (``execute.limits.StudentClock``): the bundle's
    budget less ``RESULTS_RESERVE_S``, from ``started`` (the run's start, ``time.monotonic()``)."""
    from .execute.limits import StudentClock

    return StudentClock(max(0.0, budget_s - RESULTS_RESERVE_S),
                        f"the autograder's time budget per submission (gradescope.toml budget_s = {budget_s:g} s, "
                        f"less {RESULTS_RESERVE_S:g} s kept for writing the results)", started=started)


def _clear(path: Path) -> None:
    """Remove whatever is at ``path`` (a file, a link, a folder), never following a link."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _internal_error(assignment, exc: BaseException) -> dict:
    """The results of a run the grader failed on: every task "could not be graded", the reason given."""
    import traceback

    from .review import INTERNAL_ERROR

    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    text = (f"{INTERNAL_ERROR} ({type(exc).__name__}: {str(exc)[:300]}); it could not be graded. This is not "
            "your code: course staff will look at it and re-run the autograder.")
    return {"id": "submission", "score": 0.0, "max_score": assignment.max_score, "notes": [text],
            "tasks": [{"id": t.id, "title": t.title, "score": 0.0, "max_score": t.points, "status": "error",
                       "message": text, "optional": t.optional} for t in assignment.tasks]}


def unpack(bundle: Path, root: Path) -> Path:
    """Lay a bundle out as Gradescope does (``root/source``): for running the autograder locally."""
    source = Path(root) / "source"
    if source.exists():
        shutil.rmtree(source)
    with zipfile.ZipFile(bundle) as z:
        z.extractall(source)
    for name in EXECUTABLES:
        if (source / name).is_file():
            (source / name).chmod(0o755)
    return source
