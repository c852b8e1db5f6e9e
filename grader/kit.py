"""The student kit: what a course hands out so that students can ``grader check`` without the answers.

``build_kit(assignment_dir, out)`` copies the spec (``assignment.toml``), the
public thresholds of ``calibration.toml`` (without the calibration's seeds and
held-out secret), the data generators and the support files the spec names
(the course's ``tools.py`` is made from them), this grader's own wheel (built
from a clean copy of this checkout, no dependencies: ``grader`` on the package
index is another project), the lock of the versions it grades with (the
Gradescope bundle's, ``requirements.lock``) and a README whose commands install
them in a fresh virtual environment and run ``check`` -- never the reference
solution, its notebook or the demo maker.  The kit loads as an
assignment of its own: ``check`` on a kit gives the same verdicts as on the
full assignment folder.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import tomllib
import zipfile
from pathlib import Path

import tomli_w

from .errors import FatalError, OutputError
from .spec import load_assignment

#: what a kit never holds: the answers and what makes them
PRIVATE = ("solution.py", "solution.ipynb", "make_demo.py", "fit_datasets.py")
#: calibration fields that say how the thresholds were made, not what they are
PRIVATE_CALIBRATION = ("seeds", "reference_seed", "heldout_secret", "base_seed")

#: the kit's own grader: this checkout's wheel (``build_kit(..., grader=WHEEL)``)
WHEEL = "wheel"
#: the versions the grader grades with, which the README's install keeps to (pip's constraints)
LOCK_FILE = "requirements.lock"
#: what the kit's lock leaves to the student's Python: packaging tools (setuptools 65 breaks on Python 3.12)
TOOLS = ("pip", "setuptools", "wheel")

README = """{title}: the student kit
{rule}

Check your work before you submit it with `grader check`. It runs your notebook (or
script, or saved models) and tells you, task by task, what it found, how it does on
public validation data and what to fix. It is not your grade: the grader uses other,
secret held-out data.

You need Python {python}. Open a terminal in the folder that holds this kit folder
({folder}/) and your work -- below, my-work: your notebook (tutorial.ipynb), script,
saved model or a folder of them -- and run:

{commands}

{install_note}
"""

#: after the install commands
ONCE = ("The first two commands are needed once; after that, run only the last one. On\n"
        "Windows, write grader-env\\Scripts\\ for grader-env/bin/ (and python for python3).\n\n")

#: what the README says of the grader it installs
INSTALL_NOTE = {
    WHEEL: ("{wheel} is the grader your course grades with ({build}), so `check` judges your work "
            "as the grader will; pip fetches what it needs (Keras, TensorFlow, JAX) from the Python Package "
            "Index, at the versions the course grades with ({lock}: `check` says when it runs on others). "
            "Do not install the package named \"grader\" from the index: it is another project."),
    "url": ("The address above is the grader your course grades with, at a fixed commit (git must be "
            "installed); pip fetches what it needs from the Python Package Index, at the versions the course "
            "grades with ({lock}: `check` says when it runs on others). Do not install the package "
            "named \"grader\" from the index: it is another project."),
}


def kit_files(assignment) -> list[Path]:
    """The files of ``assignment``'s folder that are the course's, not a student's (a kit is made of them): the
    spec, the calibration, the README, the modules the spec names (data generators), the support files'
    sources and the grader's wheel -- what ``check`` leaves out of a student's folder that holds the kit."""
    root = assignment.root
    names = [assignment.spec_path.name, "README.txt"]
    if assignment.calibration_path is not None:
        names.append(assignment.calibration_path.name)
    for ds in assignment.datasets.values():
        names += [ref.split(":", 1)[0] + ".py" for ref in (ds.generator, ds.function, ds.train_x) if ref]
    names += [src for _, src in assignment.notebooks.support_files]
    names += sorted(p.name for p in root.glob("grader-*.whl"))  # the grader the kit's README installs
    names.append(LOCK_FILE)
    names = list(dict.fromkeys(n for n in names if "/" not in n))
    return [root / n for n in names if (root / n).is_file()]


def _public_calibration(text: str) -> str:
    """calibration.toml without its seeds and secrets, at any depth (parsed, the private keys left out, and
    written again: however the file lays out its arrays); its ``[meta.versions]`` stay (``grader check`` and
    the Gradescope run compare with them).  Read back to prove it holds none of them."""
    def public(table: dict) -> dict:
        return {k: public(v) if isinstance(v, dict) else v for k, v in table.items() if k not in PRIVATE_CALIBRATION}

    def private_keys(table: dict) -> set[str]:
        return {k for k, v in table.items() if k in PRIVATE_CALIBRATION} | \
            {k for v in table.values() if isinstance(v, dict) for k in private_keys(v)}

    kept = public(tomllib.loads(text))
    out = "# The public thresholds of this assignment, from its calibration (seeds removed).\n\n" + \
        tomli_w.dumps(kept)
    leaked = private_keys(tomllib.loads(out))
    if leaked:
        raise OutputError(f"calibration.toml could not be made public ({', '.join(sorted(leaked))} remain)")
    return out


def build_kit(assignment_dir, out, *, grader: str | Path | None = WHEEL) -> Path:
    """Write the kit of ``assignment_dir`` into ``out`` (a new or empty folder); returns ``out``.

    ``grader`` is how its README installs the grader: ``WHEEL`` (this checkout's own wheel, built into the
    kit), the path of a grader wheel (copied into it), a ``git+https://...@<40-hex commit>`` URL, or None
    (no grader and no install steps: the Gradescope bundle installs its own)."""
    assignment = load_assignment(assignment_dir)
    root, out = assignment.root, Path(out)
    source = _grader_source(grader)
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} is not empty: choose a new folder for the kit")
    lock = None if source is None else kit_lock(assignment, source)
    try:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(assignment.spec_path, out / assignment.spec_path.name)
        if assignment.calibration_path is not None:
            (out / assignment.calibration_path.name).write_text(
                _public_calibration(assignment.calibration_path.read_text()))
        for path in sorted(root.glob("*.py")):
            if path.name not in PRIVATE:
                shutil.copyfile(path, out / path.name)
        wheel = None
        if source == WHEEL:
            wheel = build_wheel(out)
        elif isinstance(source, Path):
            wheel = out / source.name
            shutil.copyfile(source, wheel)
        if lock is not None:
            (out / LOCK_FILE).write_text(lock)
        (out / "README.txt").write_text(_readme(assignment.title, out.name, source, wheel))
    except OSError as e:
        raise OutputError(f"cannot write the kit to {out}: {e.strerror or e}") from None
    load_assignment(out)  # the kit must load on its own
    return out


def kit_lock(assignment, source) -> str:
    """The kit's ``requirements.lock``: the Gradescope bundle's lock (``versions.calibrated_pins``: the grader's
    requirements and all they need, at this environment's versions, which must be the calibration's), for
    pip's ``-c`` (a pin that the student's platform does not need is never installed), less the packaging tools
    (``TOOLS``: no grade depends on them, and a student's Python brings its own)."""
    import importlib.metadata as md

    from . import versions

    if isinstance(source, Path):  # a wheel: its own requirements
        with zipfile.ZipFile(source) as z:
            meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
            text = z.read(meta).decode("utf-8", "replace") if meta else ""
        requirements = [line.split(":", 1)[1].strip() for line in text.splitlines()
                        if line.startswith("Requires-Dist:")]
    else:
        project = Path(__file__).resolve().parents[1] / "pyproject.toml"
        requirements = (tomllib.loads(project.read_text())["project"]["dependencies"] if project.is_file()
                        else md.requires("grader") or [])
    pins = [(n, v) for n, v in versions.calibrated_pins(assignment, requirements, made="kit")
            if n.lower() not in TOOLS]
    return versions.lock_text(pins, by="grader kit", use="the README's `pip install -c` keeps to them")


_PINNED_URL = re.compile(r"git\+https://[^\s@]+@[0-9a-fA-F]{40}")


def _grader_source(grader) -> str | Path | None:
    """``grader`` checked: ``WHEEL``, None, an existing ``.whl`` path, or a git URL pinned to a commit (a name or
    ``name==version`` would install whatever a package index serves under it: ``grader`` there is another
    project)."""
    if grader is None or grader == WHEEL:
        return grader
    text = str(grader)
    if _PINNED_URL.fullmatch(text):
        return text
    path = Path(text)
    if path.suffix == ".whl" and path.is_file() and path.name.startswith("grader-"):
        return path.resolve()
    raise FatalError(f"the kit's grader {text!r} is neither a grader wheel file (grader-*.whl) nor a git URL pinned "
                     "to a commit (git+https://github.com/<course>/grader@<40-hex commit>): a bare name or "
                     "name==version installs whatever the package index serves, and `grader` there is another "
                     "project.")


def build_wheel(into: Path) -> Path:
    """This grader's wheel, built into ``into`` from a clean copy of its source (pyproject.toml, README.md and
    the package, nothing else: no stale build folder, nothing but what is checked out here), without its
    dependencies; returns the wheel's path."""
    project = Path(__file__).resolve().parents[1]
    if not (project / "pyproject.toml").is_file():
        raise FatalError(f"cannot build the grader's wheel: {project} is not a source checkout of grader (give "
                         "the kit a wheel or a pinned git URL with --grader)")
    with tempfile.TemporaryDirectory(prefix="grader-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copyfile(project / name, src / name)
        shutil.copytree(project / "grader", src / "grader",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                               "--no-cache-dir", "-w", str(Path(tmp) / "dist"), str(src)],
                              capture_output=True, text=True, cwd=tmp)
        wheels = sorted((Path(tmp) / "dist").glob("grader-*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            raise FatalError(f"cannot build the grader's wheel: {done.stderr.strip()[-400:]}")
        into.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(wheels[0], into / wheels[0].name))


def _requires_python(wheel: Path | None) -> str:
    """The Python versions the wheel installs on, in words (``3.11 or newer``)."""
    spec = ""
    if wheel is not None:
        with zipfile.ZipFile(wheel) as z:
            meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
            text = z.read(meta).decode("utf-8", "replace") if meta else ""
        spec = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                     if line.startswith("Requires-Python:")), "")
    m = re.fullmatch(r">=\s*(\d+\.\d+)", spec)
    return f"{m.group(1)} or newer" if m else (spec or "3.11 or newer")


def _readme(title: str, folder: str, source, wheel: Path | None) -> str:
    if source is None:
        commands, note = f"    grader check my-work -a {folder}", "Install the grader as your course says first."
    else:
        target = f"{folder}/{wheel.name}" if wheel is not None else f'"{source}"'
        commands = "\n".join(["    python3 -m venv grader-env",
                               f"    grader-env/bin/pip install -c {folder}/{LOCK_FILE} {target}",
                               f"    grader-env/bin/grader check my-work -a {folder}"])
        from .store import keys

        note = ONCE + textwrap.fill(INSTALL_NOTE[WHEEL if wheel is not None else "url"].format(
            wheel=wheel.name if wheel is not None else "", build=f"version {keys.build_id()}",
            lock=f"{folder}/{LOCK_FILE}"), width=84)
    return README.format(title=title, rule="=" * (len(title) + 19), folder=folder, commands=commands,
                         install_note=note, python=_requires_python(wheel))
