"""Gradescope's autograder bundle, run locally in a simulated /autograder tree."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, TEST_SECRET, TUTORIAL6

#: the fields Gradescope's results.json documents (top level and per test)
TOP = {"score", "execution_time", "output", "output_format", "visibility", "stdout_visibility", "tests"}
TEST = {"name", "number", "score", "max_score", "status", "output", "output_format", "visibility", "execution_time"}


def test_the_bundle_grades_a_submission_as_the_batch_does(tmp_path, model_dir):
    from grader.gradescope import build_bundle, unpack
    from grader.pipeline import grade_batch

    bundle = build_bundle(TUTORIAL6, tmp_path / "autograder.zip", secret=TEST_SECRET)
    names = zipfile.ZipFile(bundle).namelist()
    assert {"setup.sh", "run_autograder", "grader-secret", "gradescope.toml", "assignment/assignment.toml"} <= set(names)
    assert any(n.startswith("wheels/grader-") and n.endswith(".whl") for n in names)
    assert not any(n.endswith(("solution.py", "solution.ipynb", "make_demo.py")) for n in names)

    root = tmp_path / "autograder"
    source = unpack(bundle, root)
    (root / "submission").mkdir()
    for tid in ("1a", "2a", "2c"):
        shutil.copy(model_dir / f"{tid}.h5", root / "submission" / f"{tid}.h5")
    env = {**os.environ, "GRADER_AUTOGRADER_ROOT": str(root), "GRADER_BIN": str(Path(sys.executable).parent / "grader")}
    env.pop("GRADER_SECRET", None)  # the bundle's own secret is used
    done = subprocess.run([str(source / "run_autograder")], env=env, capture_output=True, text=True, timeout=900,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert TOP <= set(results) and results["output_format"] == "html"
    assert all(TEST <= set(t) and t["status"] in ("passed", "failed") for t in results["tests"])
    assert "<table>" in results["output"]

    (tmp_path / "class" / "s").mkdir(parents=True)
    for f in (root / "submission").iterdir():
        shutil.copy(f, tmp_path / "class" / "s" / f.name)
    os.environ["GRADER_SECRET"] = TEST_SECRET
    try:
        grade_batch(tmp_path / "class", TUTORIAL6, tmp_path / "out", workers=1)
    finally:
        os.environ.pop("GRADER_SECRET")
    batch = json.loads((tmp_path / "out" / "results.json").read_text())["students"][0]
    assert results["score"] == batch["score"]
    assert [(t["number"], t["score"]) for t in results["tests"]] == [(t["id"], t["score"]) for t in batch["tasks"]]


# -- isolation and the results folder (the run-time part: ``run_autograder``) --------------------------------

HOSTILE_SECRET = "gradescope-hostile-test-secret-5551212"


def _autograder_root(tmp_path, model_dir, notebook: str) -> Path:
    """A simulated /autograder: the bundle's source (without building a wheel), a forged results.json left from
    before, and a submission of a hostile script and a real 2a model."""
    from grader.kit import build_kit

    root = tmp_path / "autograder"
    source = root / "source"
    build_kit(TUTORIAL6, source / "assignment")
    (source / "grader-secret").write_text(HOSTILE_SECRET + "\n")
    (source / "gradescope.toml").write_text("budget_s = 540.0\n")
    (root / "results").mkdir(parents=True)
    (root / "results" / "results.json").write_text(json.dumps({"score": 1000, "output": "forged"}))
    (root / "submission").mkdir()
    (root / "submission" / "hostile.py").write_text(notebook)
    shutil.copy(model_dir / "2a.h5", root / "submission" / "2a.h5")
    return root


def _hostile(root: Path) -> str:
    """Cells that read the secret, forge results.json, leave a mark on the host and kill every process they see."""
    results = root / "results" / "results.json"
    return ("# %%\nprint(open(%r).read())\n" % str(root / "source" / "grader-secret") +
            "# %%\nimport os, json\nos.makedirs(%r, exist_ok=True)\n" % str(results.parent) +
            "json.dump({'score': 1000, 'output': 'forged by the student'}, open(%r, 'w'))\n" % str(results) +
            "open(%r, 'w').write('pwned')\n" % str(root / "pwned") +
            "# %%\nimport os, signal\nfor p in os.listdir('/proc'):\n    if p.isdigit() and int(p) != os.getpid():\n"
            "        try:\n            os.kill(int(p), signal.SIGKILL)\n        except OSError:\n            pass\n"
            "os.kill(os.getppid(), signal.SIGKILL)\n")


def _run(root: Path, path_first: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{path_first}:{os.environ['PATH']}" if path_first else os.environ["PATH"]}
    env.pop("GRADER_SECRET", None)
    return subprocess.run([sys.executable, "-m", "grader.cli", "gradescope", "run", "--root", str(root)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=900)


def _points(task_id: str) -> float:
    from grader.spec import load_assignment

    return load_assignment(TUTORIAL6).task(task_id).points


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap"), reason="Gradescope runs as root, with bwrap")
def test_student_code_cannot_forge_results_read_the_secret_or_kill_the_grader(tmp_path, model_dir):
    root = _autograder_root(tmp_path, model_dir, "")
    (root / "submission" / "hostile.py").write_text(_hostile(root))
    done = _run(root)
    assert done.returncode == 0, done.stderr[-3000:]
    text = (root / "results" / "results.json").read_text()
    results = json.loads(text)
    assert "forged" not in text and results["score"] != 1000
    assert HOSTILE_SECRET not in text
    assert not (root / "pwned").exists()
    tests = {t["number"]: t for t in results["tests"]}
    assert tests["2a"]["score"] == _points("2a")
    assert results["score"] == sum(t["score"] for t in results["tests"])


@pytest.mark.skipif(os.geteuid() != 0, reason="Gradescope runs as root")
def test_without_a_sandbox_the_autograder_runs_no_student_code(tmp_path, model_dir):
    """Hostile: the same script, in a container whose bubblewrap cannot create namespaces (a real executable
    bwrap first on PATH that fails as bubblewrap does there).  Before: the run ended in 2 s with every task
    "missing"; where bubblewrap was absent the notebook ran as root and forged a score of 1000."""
    root = _autograder_root(tmp_path, model_dir, "")
    (root / "submission" / "hostile.py").write_text(_hostile(root))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bwrap").write_text("#!/bin/sh\necho 'bwrap: Creating new namespace failed: Operation not permitted' "
                                ">&2\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    done = _run(root, fake)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Creating new namespace failed" in done.stderr  # for the staff, in the run's log
    text = (root / "results" / "results.json").read_text()
    results = json.loads(text)
    assert not (root / "pwned").exists() and "forged" not in text and HOSTILE_SECRET not in text
    assert results["output"].startswith("<p><strong>Your code was not run:</strong>")
    assert "Creating new namespace failed" in results["output"]
    tests = {t["number"]: t for t in results["tests"]}
    assert tests["2a"]["score"] == _points("2a") and results["score"] == _points("2a")
    unrun = [t for n, t in tests.items() if n != "2a"]
    assert unrun and all(t["tags"][0] == "error" and "Could not be graded" in t["output"] for t in unrun)
    assert all("missing" not in t["tags"] for t in results["tests"])
