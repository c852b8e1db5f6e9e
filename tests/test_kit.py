"""The student kit: it carries the grader it was made with, and its README's commands work as written.

The README is followed in a fresh virtual environment made by its own `python3 -m venv`, on a "laptop" folder
that holds only the kit and the student's work.  The grader's dependencies (Keras, TensorFlow, JAX: gigabytes)
are this environment's, seen through PYTHONPATH with pip barred from any index: pip then resolves the wheel's
requirements against them exactly as against a download, and a requirement they do not satisfy fails the
test instead of being fetched."""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, TUTORIAL6

DEMO = ROOT / "submissions" / "tutorial6"
#: what the laptop's Python does not get from this environment: the grader (it must come from the kit) and
#: pip and setuptools (the new environment has its own)
NOT_SHARED = re.compile(r"^(grader|__editable__|_distutils_hack|pip|setuptools|pkg_resources)([-_.].*)?$|"
                        r"\.pth$|^__pycache__$", re.IGNORECASE)


def grader(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "grader.cli", *[str(a) for a in args]], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def readme_commands(kit: Path) -> list[str]:
    """The commands of the kit's README: its indented lines, as a student copies them."""
    return [line.strip() for line in (kit / "README.txt").read_text().splitlines() if line.startswith("    ")]


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    """`grader kit reference/tutorial6 -o <laptop>/tutorial6-kit`, as a TA makes it."""
    laptop = tmp_path_factory.mktemp("laptop")
    done = grader("kit", TUTORIAL6, "-o", laptop / "tutorial6-kit")
    assert done.returncode == 0, done.stderr
    return laptop / "tutorial6-kit"


@pytest.fixture
def dependencies(tmp_path) -> Path:
    """A folder showing every distribution of this environment but the grader and the packaging tools."""
    site = next(Path(p) for p in sys.path if p.endswith("site-packages") and (Path(p) / "keras").is_dir())
    shared = tmp_path / "dependencies"
    shared.mkdir()
    for entry in site.iterdir():
        if not NOT_SHARED.search(entry.name):
            (shared / entry.name).symlink_to(entry)
    return shared


def test_the_kit_carries_this_graders_wheel_and_never_the_answers(kit):
    wheels = list(kit.glob("grader-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as z:
        names = set(z.namelist())
        assert z.read("grader/kit.py") == (ROOT / "grader" / "kit.py").read_bytes()  # this checkout's code
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Name: grader" in metadata and "Requires-Dist: keras" in metadata  # dependencies come from the index
    assert "grader/ci/github-workflow.yml" in names and not any("__pycache__" in n for n in names)
    assert not {"solution.py", "solution.ipynb", "make_demo.py"} & {p.name for p in kit.iterdir()}
    commands = readme_commands(kit)
    assert not any(re.search(r"pip install\s+['\"]?grader\b(?![-\w.]*\.whl)", c) for c in commands)


def test_the_kit_pins_the_versions_the_grader_grades_with(kit):
    """The kit's lock is the Gradescope bundle's (the grader's requirements and all they need, at this
    environment's versions), and its README installs the grader within it."""
    from grader import versions
    from grader.gradescope import pinned_install

    lock = kit / "requirements.lock"
    pins = [line for line in lock.read_text().splitlines() if line and not line.startswith("#")]
    bundle = [f"{n}=={v}" for n, v in pinned_install(TUTORIAL6, ROOT)]
    assert pins == [p for p in bundle if p.split("==")[0].lower() not in ("pip", "setuptools", "wheel")]
    assert any(p.startswith("setuptools==") for p in bundle)  # the bundle's lock has it: the kit leaves it out
    now = versions.current()
    assert versions.from_lock(lock) == now and {"keras", "tensorflow", "tf_keras", "jax", "numpy"} <= set(now)
    install = readme_commands(kit)[1]
    assert install.startswith(f"grader-env/bin/pip install -c {kit.name}/requirements.lock {kit.name}/grader-")


def test_the_kits_readme_works_as_written_in_a_fresh_virtual_environment(kit, dependencies, tmp_path):
    laptop = kit.parent
    shutil.rmtree(laptop / "grader-env", ignore_errors=True)
    work = laptop / "my-work"  # the name the README uses for the student's work
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(DEMO / "bob", work)
    tools = tmp_path / "bin"  # the laptop's python3: this Python's own interpreter, outside any environment
    tools.mkdir()
    (tools / "python3").symlink_to(Path(getattr(sys, "_base_executable", sys.executable)).resolve())
    env = {"PATH": f"{tools}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONPATH": str(dependencies), "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull,
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "TMPDIR": str(tmp_path)}
    commands = readme_commands(kit)
    assert [c.split()[:2] for c in commands] == [["python3", "-m"], ["grader-env/bin/pip", "install"],
                                                 ["grader-env/bin/grader", "check"]]
    ran = [subprocess.run(["bash", "-c", command], cwd=laptop, env=env, capture_output=True, text=True,
                          timeout=900) for command in commands]
    for command, done in zip(commands[:-1], ran[:-1]):
        assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    check = ran[-1]
    assert check.returncode == 1, check.stdout + check.stderr[-3000:]  # bob's work is not complete: a verdict
    assert "other versions than your course grades with" not in check.stderr  # installed within the lock
    assert "task 1a: passed" in check.stderr and "1b, 1d, 1e, 1f, 2b, 2c, 3 missing" in check.stderr
    where = subprocess.run([str(laptop / "grader-env" / "bin" / "python"), "-c",
                            "import grader, keras; print(grader.__file__); print(keras.__file__)"],
                           cwd=laptop, env=env, capture_output=True, text=True, timeout=300)
    grader_file, keras_file = where.stdout.split()
    assert Path(grader_file).is_relative_to(laptop / "grader-env")  # the kit's grader, in the new environment
    assert Path(keras_file).is_relative_to(dependencies)  # the dependencies as pip resolved them
    _no_verdict_where_the_kernel_cannot_start(laptop, kit, env)


def _no_verdict_where_the_kernel_cannot_start(laptop: Path, kit: Path, env: dict, user: list[str] = ()) -> None:
    """A script's check on this laptop, whose Keras comes through PYTHONPATH, which the sandbox's kernel does
    not see: the kernel cannot start, and the check says it has no verdict (exit 2), not "not ready" (1)."""
    shutil.rmtree(laptop / "my-script", ignore_errors=True)
    shutil.copytree(DEMO / "grace", laptop / "my-script")
    if user:
        subprocess.run(["chown", "-R", f"{UID}:{UID}", str(laptop / "my-script")], check=True)
    done = subprocess.run([*user, "grader-env/bin/grader", "check", "my-script", "-a", kit.name], cwd=laptop,
                          env=env, capture_output=True, text=True, timeout=900)
    said = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stderr[-3000:]
    assert "No verdict: The check could not run your code on this machine" in said and "Not ready" not in said


#: the student's uid when the kit is followed by someone who is not root
UID = 4242


def test_the_kits_readme_works_as_written_for_a_student_who_is_not_root(kit, tmp_path):
    """The same README, followed by an unprivileged user with the system's Python (of this minor version) in
    a folder of theirs: the install, a verdict on model files, and no verdict where the kernel cannot start."""
    import tempfile

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as another user")
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    if system is None:
        pytest.skip("no system Python of this version for the student")
    home = Path(tempfile.mkdtemp(prefix="grader-student-", dir="/tmp"))  # a folder the student's uid can reach
    try:
        laptop = home / "laptop"
        shutil.copytree(kit, laptop / kit.name)
        shutil.copytree(DEMO / "bob", laptop / "my-work")
        site = next(Path(p) for p in sys.path if p.endswith("site-packages") and (Path(p) / "keras").is_dir())
        (home / "dependencies").mkdir()
        for entry in site.iterdir():
            if not NOT_SHARED.search(entry.name):
                (home / "dependencies" / entry.name).symlink_to(entry)
        (home / "bin").mkdir()
        (home / "bin" / "python3").symlink_to(system)
        subprocess.run(["chown", "-R", f"{UID}:{UID}", str(home)], check=True)
        home.chmod(0o755)
        user = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups"]
        env = {"PATH": f"{home / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(home), "LANG": "C.UTF-8",
               "PYTHONPATH": str(home / "dependencies"), "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull,
               "PIP_DISABLE_PIP_VERSION_CHECK": "1", "TMPDIR": str(home)}
        commands = readme_commands(kit)
        ran = [subprocess.run([*user, "bash", "-c", command], cwd=laptop, env=env, capture_output=True, text=True,
                              timeout=900) for command in commands]
        for command, done in zip(commands[:-1], ran[:-1]):
            assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        check = ran[-1]
        assert check.returncode == 1, check.stderr[-3000:]  # bob's work is not complete: a verdict
        assert "task 1a: passed" in check.stderr and "1b, 1d, 1e, 1f, 2b, 2c, 3 missing" in check.stderr
        assert "other versions than your course grades with" not in check.stderr  # python 3.11.x: the same
        _no_verdict_where_the_kernel_cannot_start(laptop, kit, env, user)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_grader_the_kit_cannot_pin_is_refused(tmp_path):
    for source in ("grader", "grader==0.1.0", "git+https://github.com/course/grader@main"):
        done = grader("kit", TUTORIAL6, "-o", tmp_path / source.replace("/", "_"), "--grader", source)
        assert done.returncode == 2 and "another project" in done.stderr, done.stderr
        assert not (tmp_path / source.replace("/", "_")).exists()


def test_a_kit_can_name_the_grader_by_a_pinned_url_instead(tmp_path):
    url = "git+https://github.com/course/grader@" + "0123456789abcdef" * 2 + "01234567"
    done = grader("kit", TUTORIAL6, "-o", tmp_path / "tutorial6-kit", "--grader", url)
    assert done.returncode == 0, done.stderr
    commands = readme_commands(tmp_path / "tutorial6-kit")
    assert commands[1] == f'grader-env/bin/pip install -c tutorial6-kit/requirements.lock "{url}"' and not list((tmp_path / "tutorial6-kit").glob("*.whl"))


def test_a_kit_without_a_grader_has_no_install_steps(tmp_path):
    """What the Gradescope bundle takes (it installs its own wheel): no wheel, and only the check command."""
    from grader.kit import build_kit

    kit = build_kit(TUTORIAL6, tmp_path / "tutorial6-kit", grader=None)
    assert not list(kit.glob("*.whl")) and readme_commands(kit) == ["grader check my-work -a tutorial6-kit"]
    assert "first two commands" not in (kit / "README.txt").read_text()


def _edit_kit(kit: Path, into: Path) -> Path:
    copy = into / kit.name
    shutil.copytree(kit, copy)
    return copy


@pytest.mark.parametrize("lock", [True, False])
def test_check_says_when_it_runs_on_other_versions_than_the_kit_pins(kit, tmp_path, lock):
    """A student whose environment has another Keras than the kit's lock (or, in a kit without a lock, than
    its calibration recorded) is told, before any verdict, that the check may differ from the grade."""
    from grader import versions

    copy = _edit_kit(kit, tmp_path)
    if lock:
        text = (copy / "requirements.lock").read_text()
        (copy / "requirements.lock").write_text(re.sub(r"(?m)^keras==.*$", "keras==3.0.0", text))
    else:
        (copy / "requirements.lock").unlink()
        text = (copy / "calibration.toml").read_text()
        (copy / "calibration.toml").write_text(re.sub(r'(?m)^keras_version = .*$', 'keras_version = "3.0.0"', text))
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(DEMO / "alice" / "1e.h5", work / "1e.h5")
    done = grader("check", work, "-a", copy, "-o", tmp_path / "out")
    assert done.returncode == 1, done.stderr[-3000:]  # a verdict: only 1e is there
    said = " ".join(done.stderr.split())
    now = versions.current()["keras"]
    if lock:
        assert f"This check runs on other versions than your course grades with ({copy / 'requirements.lock'}): " \
               f"keras {now} (the course grades with 3.0.0)" in said
    else:
        assert f"Checking with other versions than the calibration was recorded with: keras {now} (calibrated " \
               "with 3.0.0)" in said
    assert said.index("WARNING") < said.index("task 1e")  # before any verdict
    page = next((tmp_path / "out").rglob("*.html")).read_text()
    assert "3.0.0" in page


def test_a_kit_is_refused_where_the_grader_does_not_run_the_calibrations_versions(tmp_path):
    import tomli_w
    import tomllib

    from grader.errors import FatalError
    from grader.kit import build_kit

    spec = tmp_path / "tutorial6"
    shutil.copytree(TUTORIAL6, spec, ignore=shutil.ignore_patterns("__pycache__"))
    data = tomllib.loads((spec / "calibration.toml").read_text())
    data["meta"]["keras_version"] = "3.0.0"
    (spec / "calibration.toml").write_text(tomli_w.dumps(data))
    with pytest.raises(FatalError, match="the kit would pin other versions") as e:
        build_kit(spec, tmp_path / "kit")
    assert "3.0.0 at calibration" in e.value.explain() and not (tmp_path / "kit").exists()
