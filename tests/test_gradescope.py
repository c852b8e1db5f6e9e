"""Gradescope's autograder bundle, run locally in a simulated /autograder tree."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

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
