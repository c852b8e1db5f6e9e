"""The versions grades depend on: what calibration recorded, what grades now, and the pinned install.

``current()`` reads, without importing any of them, the versions of the
packages a metric depends on (``GRADING_PACKAGES``) and of Python;
``calibrate`` writes them to ``calibration.toml`` (``[meta.versions]``), a
batch stores them with its run in the gradebook, and ``mismatch`` words the
warning a batch, a calibration or a Gradescope run gives when it grades with
other ones.  ``pinned_closure()`` is the grader's dependency closure in this
environment at exact versions: the lock ``gradescope build`` puts in the
bundle (requirement markers evaluated here, by ``packaging``).
"""
from __future__ import annotations

import importlib.metadata as md
import platform
import sys
import tomllib
from pathlib import Path

#: what a metric depends on: import name -> the distributions that may provide it (TensorFlow's CPU-only
#: build on Linux x86-64, the full one elsewhere)
GRADING_PACKAGES = {
    "keras": ("keras",),
    "tf_keras": ("tf_keras",),  # Keras 2: code written for it runs and is re-trained on it
    "jax": ("jax",),
    "jaxlib": ("jaxlib",),
    "tensorflow": ("tensorflow-cpu", "tensorflow", "tensorflow-macos", "tensorflow-intel"),
    "numpy": ("numpy",),
    "h5py": ("h5py",),
}


def python_version() -> str:
    return platform.python_version()


def current() -> dict[str, str]:
    """``{"python": "3.11.7", "keras": "3.15.1", ...}``: this environment's versions of what grades depend on
    (a package that is not installed is left out)."""
    out = {"python": python_version()}
    for name, dists in GRADING_PACKAGES.items():
        for dist in dists:
            try:
                out[name] = md.version(dist)
            except md.PackageNotFoundError:
                continue
            elsewhere = _imported_elsewhere(name, md.distribution(dist))
            if elsewhere:  # what runs is not what the metadata says: never taken for the installed version
                out[name] = f"{out[name]} installed, but {name} is imported from {elsewhere}"
            break
    return out


def _imported_elsewhere(module: str, dist) -> str | None:
    """Where ``import module`` finds it when that is not the installed distribution's own copy (another copy
    earlier on ``sys.path``: PYTHONPATH, the working directory); None when it is, or when that cannot be told
    (an editable install, a distribution that does not record its files).  Nothing is imported."""
    import importlib.util

    own = next((f for f in dist.files or () if str(f) in (f"{module}/__init__.py", f"{module}.py")), None)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if own is None or spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    found = Path(spec.origin).resolve()
    if found == Path(dist.locate_file(own)).resolve():
        return None
    return str(found.parent if found.name == "__init__.py" else found)


def _same(name: str, a: str | None, b: str | None) -> bool:
    if name == "python" and a and b:  # a patch release of Python changes no metric; major.minor is what is pinned
        return a.split(".")[:2] == b.split(".")[:2]
    return a == b


def differences(recorded: dict | None, now: dict | None = None) -> list[tuple[str, str | None, str | None]]:
    """``[(name, recorded, now)]`` for every package whose recorded version differs from this environment's
    (now None: not installed here).  Only what was recorded is compared: a calibration file written before
    all of them were recorded is held to what it says."""
    if not recorded:
        return []
    now = current() if now is None else now
    names = [n for n in ("python", *GRADING_PACKAGES) if n in recorded]
    return [(n, recorded[n], now.get(n)) for n in names if not _same(n, recorded[n], now.get(n))]


def mismatch(recorded: dict | None, now: dict | None = None, *, doing: str = "Grading") -> str | None:
    """The warning for grading with other versions than calibration recorded (None when they agree, or when
    the calibration recorded none)."""
    diffs = differences(recorded, now)
    if not diffs:
        return None
    said = "; ".join(f"{n} {b or 'not installed'} (calibrated with {a})" for n, a, b in diffs)
    return (f"{doing} with other versions than the calibration was recorded with: {said}. The thresholds may "
            "not hold for correct work: grade with the calibrated versions (the Gradescope bundle pins them), "
            "or run `grader calibrate` again with these.")


def recorded(calibration_path: Path | None) -> dict[str, str] | None:
    """``[meta.versions]`` of a calibration file; a file written before versions were recorded gives what it
    has (its ``keras_version``); None when there is no file or nothing in it."""
    if calibration_path is None or not Path(calibration_path).is_file():
        return None
    return from_meta(tomllib.loads(Path(calibration_path).read_text()).get("meta", {}))


def from_meta(meta) -> dict[str, str] | None:
    """The versions of a calibration file's ``[meta]`` table (see ``recorded``)."""
    if not isinstance(meta, dict):
        return None
    versions = meta.get("versions")
    if isinstance(versions, dict):
        return {str(k): str(v) for k, v in versions.items()}
    return {"keras": str(meta["keras_version"])} if "keras_version" in meta else None


def from_lock(path: Path) -> dict[str, str] | None:
    """The versions of what grades depend on that a lock (``name==version`` lines, as ``lock_text``
    writes them: the bundle's and the kit's ``requirements.lock``) pins, and the Python its header names; None
    when there is no such file."""
    import re

    if not Path(path).is_file():
        return None
    text = Path(path).read_text(errors="replace")
    pins = {}
    for line in text.splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[_canonical(name.strip())] = version.strip()
    out = {}
    m = re.search(r"\(Python (\d+\.\d+(?:\.\d+)?)", text)
    if m:
        out["python"] = m.group(1)
    for name, dists in GRADING_PACKAGES.items():
        found = next((pins[_canonical(d)] for d in dists if _canonical(d) in pins), None)
        if found is not None:
            out[name] = found
    return out


# -- the pinned install of the Gradescope bundle ---------------------------------------------------------------

def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def pinned_closure(requirements: list[str]) -> list[tuple[str, str]]:
    """``[(distribution, version)]``: ``requirements`` and everything they require, as installed in this
    environment (markers evaluated here, extras followed), sorted by name.  A requirement this environment
    does not satisfy is refused (``ValueError``): the lock must be what was run."""
    from packaging.requirements import Requirement

    pinned: dict[str, tuple[str, str]] = {}
    followed: set[tuple[str, str]] = set()  # (distribution, extra) whose requirements are queued
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        key = _canonical(req.name)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            raise ValueError(f"{req.name} ({req}) is not installed in this environment ({sys.prefix})") from None
        version = dist.version
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            raise ValueError(f"{req.name} {version} is installed here, but {req} is required")
        pinned[key] = (dist.metadata["Name"], version)
        for wanted in ["", *sorted(req.extras)]:
            if (key, wanted) in followed:
                continue
            followed.add((key, wanted))
            for text in dist.requires or []:
                todo.append((Requirement(text), wanted))
    return sorted(pinned.values(), key=lambda nv: _canonical(nv[0]))


def calibrated_pins(assignment, requirements: list[str], *, made: str) -> list[tuple[str, str]]:
    """``pinned_closure(requirements)`` for ``assignment`` (a loaded spec); refused (``FatalError``) where this
    environment lacks one, or where the grading packages are not the versions the assignment's calibration
    recorded: the Gradescope bundle's and the student kit's lock.  ``made``: what is pinned (bundle, kit)."""
    from .errors import FatalError

    diffs = differences(recorded(assignment.calibration_path))
    if diffs:
        said = "; ".join(f"{n} {now or 'not installed'} here, {rec} at calibration" for n, rec, now in diffs)
        raise FatalError(f"the {made} would pin other versions than {assignment.id}'s "
                         f"calibration was recorded with: {said}",
                         hint=f"build it from the environment that calibrated, or run `grader calibrate "
                              f"{assignment.folder}` here first")
    try:
        return pinned_closure(requirements)
    except ValueError as e:
        raise FatalError(f"cannot pin the grader's dependencies: {e}",
                         hint=f"build the {made} from the grader's own environment (pip install -e .)") from None


def lock_text(pins: list[tuple[str, str]], *, by: str = "grader gradescope build",
              use: str = "setup.sh installs exactly these (no resolution), then the grader's wheel without deps") -> str:
    """``requirements.lock``: one ``name==version`` a line, after a header saying where it came from (``by``, with
    this Python: ``from_lock`` reads it) and how it is installed (``use``)."""
    head = [f"# written by `{by}` from {sys.prefix} (Python {platform.python_version()}, "
            f"{sys.platform} {platform.machine()}):",
            "# the grader's dependencies and all they need, at the exact versions the assignment was calibrated and",
            f"# built with; {use}"]
    return "\n".join(head + [f"{name}=={version}" for name, version in pins]) + "\n"
