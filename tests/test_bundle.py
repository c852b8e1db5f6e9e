"""The Gradescope bundle installs on Gradescope's images, pinned to what the calibration recorded.

Its lock resolves against the package index for the Python setup.sh provides (and CPython 3.12), not for 3.10
(which is why setup.sh provides its own); setup.sh's Python provisioning runs in a clean environment whose
``python3`` is a real 3.8, 3.10, 3.12 or the build's own version; calibration records the versions grades
depend on, and a batch, a calibration and a bundle built with other ones say so.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import tomli_w

from conftest import ROOT, TUTORIAL6
from grader import gradescope, versions
from grader.errors import FatalError
from grader.spec import load_assignment

STRONG_SECRET = "9f1c2b7e4d6a8035c1e9b2f47a6d3e8c0b5f1a7d2e9c4b6f"
#: pip's words for an index it could not connect to (a skip); anything else is a failure
UNREACHABLE = re.compile(r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
                         r"resolution|Name or service not known|Network is unreachable|Connection refused|"
                         r"ConnectTimeoutError|ProxyError|Max retries exceeded")


def _assignment_copy(tmp_path, calibrated: dict | None) -> Path:
    """tutorial6 with ``calibrated`` as its calibration's [meta.versions] (None: as shipped)."""
    spec = tmp_path / "tutorial6"
    shutil.copytree(TUTORIAL6, spec, ignore=shutil.ignore_patterns("__pycache__"))
    if calibrated is not None:
        path = spec / "calibration.toml"
        data = tomllib.loads(path.read_text())
        data["meta"]["versions"] = calibrated
        path.write_text(tomli_w.dumps(data))
    return spec


def _older_keras() -> dict:
    """This environment's versions, but a calibration recorded with Keras 3.0.0."""
    return {**versions.current(), "keras": "3.0.0"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle of tutorial6 with this environment's versions recorded as its calibration's, unpacked."""
    tmp = tmp_path_factory.mktemp("bundle")
    spec = _assignment_copy(tmp, versions.current())
    out = gradescope.build_bundle(spec, tmp / "autograder.zip", secret=STRONG_SECRET)
    source = gradescope.unpack(out, tmp / "root")
    return out, source


def _index_env() -> dict:
    """This environment for pip, without this machine's local wheels, extra indexes and constraints: the
    package index alone (its certificate and proxy settings kept)."""
    dropped = ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PIP_NO_INDEX", "PIP_REQUIRE_VIRTUALENV")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PIP_CONFIG_FILE"] = os.devnull
    if "PIP_CERT" not in env and Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        env["PIP_CERT"] = "/etc/ssl/certs/ca-certificates.crt"
    return env


def _resolve(lock: Path, python: str, report: Path) -> subprocess.CompletedProcess:
    """pip's resolution of ``lock`` for CPython ``python`` on Gradescope's Linux x86-64 (wheels only)."""
    platforms = [a for p in gradescope.manylinux_platforms() for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
           str(report), "--python-version", python, "--only-binary=:all:", *platforms, "-r", str(lock)]
    done = subprocess.run(cmd, env=_index_env(), capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 and UNREACHABLE.search(done.stdout + done.stderr):
        pytest.skip(f"the package index cannot be reached from here: {UNREACHABLE.search(done.stderr + done.stdout)[0]}")
    return done


def _pins(text: str) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    return {canonicalize_name(n): v for n, v in (line.split("==", 1) for line in text.splitlines()
                                                  if line and not line.startswith("#"))}


# -- what the bundle holds -----------------------------------------------------------------------------------

def test_the_bundle_pins_the_environment_that_calibrated_and_provides_its_python(bundle):
    out, source = bundle
    pins = _pins((source / gradescope.LOCK_FILE).read_text())
    now = versions.current()
    # every grading package at the version calibration recorded (this environment's), and all they need
    assert pins["keras"] == now["keras"] and pins["jax"] == now["jax"] and pins["jaxlib"] == now["jaxlib"]
    assert pins["numpy"] == now["numpy"] and pins["h5py"] == now["h5py"]
    assert now["tensorflow"] in (pins.get("tensorflow-cpu"), pins.get("tensorflow"))
    import importlib.metadata as md
    assert pins["ml-dtypes"] == md.version("ml_dtypes") and pins["sqlalchemy"] == md.version("sqlalchemy")
    assert "pytest" not in pins  # the grader's closure, not the test environment's
    minor = "%d.%d" % sys.version_info[:2]
    settings = tomllib.loads((source / "gradescope.toml").read_text())
    assert settings["python"] == minor and "Ubuntu" in settings["image"]
    setup = (source / "setup.sh").read_text()
    assert f"./provision_python.sh {minor} {gradescope.GRADER_ENV}" in setup
    assert "--no-deps --only-binary :all: -r requirements.lock" in setup and "pip check" in setup
    assert (source / "uv-requirements.txt").read_text() == \
        f"uv=={gradescope.UV_VERSION} --hash=sha256:{gradescope.UV_WHEEL_SHA256}\n"
    modes = {i.filename: i.external_attr >> 16 for i in zipfile.ZipFile(out).infolist()}
    assert modes["provision_python.sh"] & 0o111 and modes["setup.sh"] & 0o111
    # the calibration's versions travel with the bundle's assignment: the run compares with them
    assert load_assignment(source / "assignment").calibrated_versions == now


def test_the_build_message_names_the_image_the_python_and_the_pins(tmp_path):
    spec = _assignment_copy(tmp_path, versions.current())
    done = subprocess.run([sys.executable, "-m", "grader.cli", "gradescope", "build", str(spec), "-o",
                           str(tmp_path / "ag.zip")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "GRADER_SECRET": STRONG_SECRET, "COLUMNS": "400"}, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    said = " ".join((done.stdout + done.stderr).split())
    now = versions.current()
    minor = "%d.%d" % sys.version_info[:2]
    assert gradescope.GRADESCOPE_IMAGE in said and f"Python {minor}" in said and f"uv {gradescope.UV_VERSION}" in said
    assert f"keras {now['keras']}, jax {now['jax']}, jaxlib {now['jaxlib']}" in said
    assert "the versions its calibration recorded" in said and "requirements.lock" in said


def test_a_bundle_is_refused_when_this_environment_is_not_what_calibrated(tmp_path):
    spec = _assignment_copy(tmp_path, _older_keras())
    with pytest.raises(FatalError) as e:
        gradescope.build_bundle(spec, tmp_path / "ag.zip", secret=STRONG_SECRET)
    assert f"keras {versions.current()['keras']} here, 3.0.0 at calibration" in e.value.explain()
    assert "grader calibrate" in e.value.explain() and not (tmp_path / "ag.zip").exists()


# -- the lock resolves where setup.sh installs it ---------------------------------------------------------------

@pytest.mark.slow  # the package index, over the network
@pytest.mark.parametrize("python", ["%d.%d" % sys.version_info[:2], "3.12"])
def test_the_lock_resolves_on_gradescopes_linux_for_the_python_setup_provides(bundle, tmp_path, python):
    _, source = bundle
    lock = source / gradescope.LOCK_FILE
    done = _resolve(lock, python, tmp_path / "report.json")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    from packaging.utils import canonicalize_name
    chosen = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
              for i in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert chosen == _pins(lock.read_text())  # exactly the lock: nothing missing, nothing else pulled in
    assert all(i["download_info"]["url"].endswith(".whl")
               for i in json.loads((tmp_path / "report.json").read_text())["install"])


@pytest.mark.slow
def test_the_lock_does_not_resolve_for_python_3_10_which_is_why_setup_provides_its_python(bundle, tmp_path):
    _, source = bundle
    done = _resolve(source / gradescope.LOCK_FILE, "3.10", tmp_path / "report.json")
    assert done.returncode != 0
    assert "No matching distribution found for" in done.stdout + done.stderr  # a pin has no 3.10 wheel
    assert "provision_python.sh" in (source / "setup.sh").read_text()


# -- setup.sh's Python provisioning, in a clean environment -----------------------------------------------------

def _real_python(version: str) -> Path | None:
    """A real interpreter of CPython ``version`` on this machine (on PATH, or one pyenv keeps), or None."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{version}"), f"/usr/bin/python{version}", f"/usr/local/bin/python{version}",
                  *sorted(str(p) for p in pyenv.glob(f"versions/{version}.*/bin/python{version}"))]
    for exe in filter(None, candidates):
        if not Path(exe).is_file():
            continue
        done = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.executable)"],
                              capture_output=True, text=True)
        lines = done.stdout.split()
        if done.returncode == 0 and len(lines) == 2 and lines[0] == version:
            return Path(lines[1]).resolve()
    return None


def _provision(source: Path, tmp_path: Path, python3: Path, extra_env: dict | None = None):
    """``provision_python.sh`` as setup.sh runs it, in ``env -i`` with a fresh HOME and a PATH whose python3
    is ``python3``; uv finds Pythons here only (no downloads: GitHub is not reachable from the tests)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python3").is_symlink():
        (bin_dir / "python3").symlink_to(python3)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    own = Path(sys.executable).resolve().parent  # where uv may find the build's Python (the one running the tests)
    env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin:{own}", "UV_PYTHON_DOWNLOADS": "never",
           "GRADER_TOOLS": str(tmp_path / "tools"), **(extra_env or {})}
    for key in ("PIP_CERT", "SSL_CERT_FILE"):
        if key in os.environ:
            env[key] = os.environ[key]
    minor = "%d.%d" % sys.version_info[:2]
    done = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), str(source / "provision_python.sh"),
                           minor, str(tmp_path / "grader-env")], capture_output=True, text=True, timeout=1800,
                          cwd=tmp_path)
    if done.returncode != 0 and UNREACHABLE.search(done.stdout + done.stderr):
        pytest.skip("the package index (for uv) cannot be reached from here")
    return done


def _python_of(env_dir: Path) -> tuple[str, str]:
    done = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import sys, platform; "
                           "print(platform.python_version()); print(__import__('os').path.realpath(sys.base_prefix))"],
                          capture_output=True, text=True, check=True)
    version, base = done.stdout.split()
    return version, base


@pytest.mark.slow  # installs uv from the package index
@pytest.mark.parametrize("system", ["3.8", "3.10", "3.12"])
def test_provisioning_gives_the_builds_python_where_the_images_python3_is_another(bundle, tmp_path, system):
    """Ubuntu 20.04, 22.04 and 24.04 ship python3 3.8, 3.10 and 3.12: the grader's environment still runs
    the build's Python, provided by the pinned uv."""
    _, source = bundle
    python3 = _real_python(system)
    if python3 is None:
        pytest.skip(f"no CPython {system} on this machine to stand for the image's python3")
    done = _provision(source, tmp_path, python3)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    minor = "%d.%d" % sys.version_info[:2]
    assert f"is Python {system}, the grader needs {minor}: uv provides it" in done.stdout
    version, _ = _python_of(tmp_path / "grader-env")
    assert version.startswith(minor + ".")
    uv = subprocess.run([str(tmp_path / "tools" / "uv-env" / "bin" / "uv"), "--version"], capture_output=True,
                        text=True, check=True)
    assert uv.stdout.split()[1] == gradescope.UV_VERSION


@pytest.mark.slow
def test_provisioning_uses_the_images_python3_when_it_is_the_builds_version(bundle, tmp_path):
    _, source = bundle
    python3 = Path(sys.executable).resolve()  # a real interpreter of the build's version
    done = _provision(source, tmp_path, python3)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"({tmp_path / 'bin' / 'python3'}) is Python {'%d.%d' % sys.version_info[:2]}: the grader runs on it" \
        in done.stdout
    version, base = _python_of(tmp_path / "grader-env")
    assert version == ".".join(map(str, sys.version_info[:3]))
    assert base == os.path.realpath(sys.base_prefix)
    # setup.sh run again (a TA debugging the image, a rebuilt autograder): the environment is made anew
    (tmp_path / "grader-env" / "planted").write_text("from the first run")
    again = _provision(source, tmp_path, python3)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert not (tmp_path / "grader-env" / "planted").exists()
    assert _python_of(tmp_path / "grader-env") == (version, base)


@pytest.mark.slow
def test_provisioning_refuses_a_uv_whose_hash_is_not_the_pinned_one(bundle, tmp_path):
    _, source = bundle
    tampered = tmp_path / "source"
    shutil.copytree(source, tampered)
    (tampered / "uv-requirements.txt").write_text(f"uv=={gradescope.UV_VERSION} --hash=sha256:{'0' * 64}\n")
    done = _provision(tampered, tmp_path, Path(sys.executable).resolve())
    assert done.returncode != 0 and "DO NOT MATCH THE HASHES" in done.stdout + done.stderr
    assert not (tmp_path / "grader-env").exists()


# -- the versions grades depend on: recorded, stored, and warned about ------------------------------------------

def test_a_batch_with_other_versions_than_calibrated_warns_and_stores_what_it_graded_with(tmp_path):
    spec = _assignment_copy(tmp_path, _older_keras())
    assert load_assignment(spec).calibrated_versions["keras"] == "3.0.0"
    (tmp_path / "subs").mkdir()
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(tmp_path / "subs"), "-a", str(spec),
                           "-o", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "GRADER_SECRET": STRONG_SECRET, "COLUMNS": "400"}, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    now = versions.current()
    said = f"keras {now['keras']} (calibrated with 3.0.0)"
    assert said in " ".join((done.stdout + done.stderr).split())  # on the terminal
    assert any(said in w for w in json.loads((out / "results.json").read_text())["warnings"])
    assert said in (out / "index.html").read_text()  # on the class page
    c = sqlite3.connect(out / "gradebook.sqlite")
    try:
        assert json.loads(c.execute("select versions from runs").fetchone()[0]) == now  # the gradebook keeps them
    finally:
        c.close()
    # what pages re-drawn from the gradebook alone (`grader report`, `override`) compare with the calibration's
    from grader.store import Gradebook
    book = Gradebook(out_dir=out)
    try:
        assert book.latest_versions("tutorial6") == now and book.latest_versions("another") is None
    finally:
        book.close()


def test_a_batch_with_the_calibrated_versions_says_nothing_of_them(tmp_path):
    spec = _assignment_copy(tmp_path, versions.current())
    (tmp_path / "subs").mkdir()
    from grader.pipeline import grade_batch

    grade_batch(tmp_path / "subs", spec, tmp_path / "out")
    assert not any("calibration was recorded with" in w
                   for w in json.loads((tmp_path / "out" / "results.json").read_text()).get("warnings", []))


def test_a_mismatch_names_every_package_that_differs_and_only_those():
    recorded = {"python": "3.11.2", "keras": "3.14.1", "jax": "0.10.2", "numpy": "2.4.6"}
    now = {"python": "3.11.7", "keras": "3.15.1", "jax": "0.10.2", "numpy": "2.3.0", "h5py": "3.14.0"}
    text = versions.mismatch(recorded, now)
    assert "keras 3.15.1 (calibrated with 3.14.1)" in text and "numpy 2.3.0 (calibrated with 2.4.6)" in text
    assert "jax" not in text and "python" not in text and "h5py" not in text  # same, a patch release, unrecorded
    assert versions.mismatch({**recorded, "python": "3.10.13"}, now).count("python 3.11.7") == 1
    assert versions.mismatch({"keras": "3.15.1"}, now) is None and versions.mismatch(None, now) is None
    assert "tensorflow not installed (calibrated with 2.21.0)" in versions.mismatch({"tensorflow": "2.21.0"}, now)


def test_the_kit_keeps_the_calibrations_versions(tmp_path):
    from grader.kit import build_kit

    spec = _assignment_copy(tmp_path, _older_keras())
    kit = build_kit(spec, tmp_path / "kit", grader=None)  # with a grader, its lock would be refused (test_kit)
    text = (kit / "calibration.toml").read_text()
    assert "heldout_secret" not in text and "reference_seed" not in text  # still public
    assert load_assignment(kit).calibrated_versions == _older_keras()


@pytest.mark.slow  # trains the reference
def test_calibration_records_the_versions_and_a_partial_one_refuses_other_versions(tmp_path):
    from grader.calibrate import calibrate

    spec = _assignment_copy(tmp_path, _older_keras())
    with pytest.raises(FatalError) as e:  # --task keeps runs recorded with Keras 3.0.0: refused before training
        calibrate(spec, runs=2, tasks=["1a"])
    assert "keras" in e.value.explain() and "3.0.0 recorded" in e.value.explain()

    spec = _assignment_copy(tmp_path / "same", None)
    out = calibrate(spec, runs=3, tasks=["1a"])  # 3 runs: the fewest whose error bound passes
    data = tomllib.loads(out.read_text())
    assert data["meta"]["versions"] == versions.current()
    assert load_assignment(spec).calibrated_versions == versions.current()


def test_the_gradescope_run_warns_staff_when_it_grades_with_other_versions(bundle, tmp_path):
    _, source = bundle
    root = tmp_path / "autograder"
    shutil.copytree(source, root / "source")
    path = root / "source" / "assignment" / "calibration.toml"
    data = tomllib.loads(path.read_text())
    data["meta"]["versions"] = _older_keras()  # as if the image had installed another Keras than the lock's
    path.write_text(tomli_w.dumps(data))
    (root / "submission").mkdir()
    env = {**os.environ, "GRADER_AUTOGRADER_ROOT": str(root), "GRADER_BIN": str(Path(sys.executable).parent / "grader")}
    env.pop("GRADER_SECRET", None)
    done = subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    said = f"keras {versions.current()['keras']} (calibrated with 3.0.0)"
    assert said in " ".join(done.stderr.split())  # the autograder's output: staff see it, students do not
    results = json.loads((root / "results" / "results.json").read_text())
    assert said not in json.dumps(results)  # nothing of it in what the student sees


def test_the_bundles_wheel_is_this_checkouts_code_and_nothing_left_from_an_old_build(tmp_path):
    """A `build/` left in the checkout by an earlier in-place build holds modules since deleted; the bundle's
    wheel is built from a clean copy, so it carries this checkout's package and nothing else."""
    import io

    stale = ROOT / "build" / "lib" / "grader" / "module_deleted_since.py"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("raise SystemExit('a module deleted from the source')\n")
    try:
        out = gradescope.build_bundle(_assignment_copy(tmp_path, versions.current()), tmp_path / "autograder.zip",
                                      secret=STRONG_SECRET)
    finally:
        stale.unlink()
    with zipfile.ZipFile(out) as bundle:
        wheel = next(n for n in bundle.namelist() if n.startswith("wheels/grader-") and n.endswith(".whl"))
        with zipfile.ZipFile(io.BytesIO(bundle.read(wheel))) as z:
            names = {n for n in z.namelist() if n.startswith("grader/")}
            assert z.read("grader/kit.py") == (ROOT / "grader" / "kit.py").read_bytes()
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "grader").rglob("*.py") if "__pycache__" not in p.parts}
    assert "grader/module_deleted_since.py" not in names
    assert {n for n in names if n.endswith(".py")} == source
