"""`grader check`: a student's own check on public data; verdicts, fixes, exit codes, and never the secret."""
import os
import re
import shutil
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT, TUTORIAL6, small_model
from grader.execute.sandbox import bwrap_path

needs_sandbox = pytest.mark.skipif(not bwrap_path(), reason="bubblewrap is not installed (.ci/run installs it)")
DEMO = ROOT / "submissions" / "tutorial6"


def check(path, tmp_path, secret=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "GRADER_SECRET"}
    if secret:
        env["GRADER_SECRET"] = secret
    env["COLUMNS"] = "200"
    out = tmp_path / "check-out"
    proc = subprocess.run([sys.executable, "-m", "grader.cli", "check", str(path), "-a", str(TUTORIAL6),
                           "-o", str(out)], capture_output=True, text=True, env=env, cwd=cwd or ROOT, timeout=600)
    pages = list((out / "students").glob("*.html")) if (out / "students").exists() else []
    html = pages[0].read_text() if pages else ""
    return proc, proc.stdout + proc.stderr, html


def test_a_complete_submission_passes_the_check(tmp_path):
    proc, text, html = check(DEMO / "alice", tmp_path)
    assert proc.returncode == 0, text[-3000:]
    assert "Every required task is present and loads" in text
    assert re.search(r"task 1c: passed 10/10\s+from 1c\.h5\s+mse", text)
    assert "check on public validation data, not your grade" in html


def test_missing_tasks_fail_the_check_and_say_what_to_submit(tmp_path):
    proc, text, _ = check(DEMO / "bob", tmp_path)
    assert proc.returncode == 1
    assert "Not ready to submit" in text and "1b" in text.split("Not ready to submit")[1]
    assert "Submit it as 1b.h5 (model.save('1b.h5'))" in text


def test_planted_mistakes_are_named_with_their_fix(tmp_path):
    # swapped outputs (dave's 2a), a truncated file (carol's 2a)
    _, text, _ = check(DEMO / "dave", tmp_path)
    assert "outputs look swapped" in text and "not on 1 - y" in text
    proc, text, _ = check(DEMO / "carol", tmp_path / "c")
    assert proc.returncode == 1 and "task(s) 2a could not be graded" in text
    # a wrong file name and a wrong input width
    sub = tmp_path / "mine"
    sub.mkdir()
    small_model(hidden=((3, "relu"),), inputs=1, outputs=(1, "linear")).save(sub / "my_model.h5")
    small_model(hidden=((3, "relu"),), inputs=2, outputs=(1, "linear")).save(sub / "1c.h5")
    small_model(hidden=((4, "relu"),), inputs=2, outputs=(2, "softmax")).save(sub / "model.keras")
    _, text, html = check(sub, tmp_path / "m")
    assert "my_model.h5: the name does not say which task it answers" in text and "Rename it" in text
    assert "the model takes 2 input(s) but the task has 1" in text
    assert "model.keras looks like task 3's file, which must be model.h5" in text
    assert "save it with model.save('model.h5')" in text
    assert "Rename it" in html


@needs_sandbox
def test_keras2_code_in_a_notebook_is_explained_cell_by_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in [
        "import numpy as np\nfrom keras.models import Sequential\nfrom keras.layers import Dense\n"
        "from keras.optimizers import Adam",
        "x = np.linspace(0, 1, 200)\ny = x.copy()",
        "model = Sequential()\nmodel.add(Dense(units=3, activation='relu', input_dim=1))\n"
        "model.add(Dense(units=1))\nmodel.compile(loss='mse', optimizer=Adam(lr=0.01))",
    ]])
    nbformat.write(nb, tmp_path / "tutorial6.ipynb")
    proc, text, _ = check(tmp_path / "tutorial6.ipynb", tmp_path)
    assert proc.returncode == 1
    assert "cell   1 ok" in text and "cell   3" in text  # progress, cell by cell
    assert "learning_rate" in text  # the fix for Adam(lr=...)


def test_check_never_reads_or_shows_the_secret(tmp_path):
    """The held-out data of check comes from a public seed: the secret (variable or file) changes
    nothing and appears nowhere."""
    work = tmp_path / "cwd"
    work.mkdir()
    (work / ".grader-secret").write_text("file-secret-0123456789")
    shutil.copytree(DEMO / "dave", work / "dave")
    runs = []
    for i, secret in enumerate(["env-secret-AAAA", "env-secret-BBBB"]):
        proc, text, html = check(work / "dave", tmp_path / str(i), secret=secret, cwd=work)
        for s in ("env-secret-AAAA", "env-secret-BBBB", "file-secret-0123456789"):
            assert s not in text and s not in html
        runs.append(re.sub(r"\d+\.\d+ s", "", text.replace(str(tmp_path / str(i)), "")))
    assert runs[0] == runs[1]  # the secret did not change a single metric
    assert "accuracy 0.0" in runs[0]


def test_the_check_api_prints_nothing_and_reports_through_its_callback(tmp_path, capfd):
    from grader.api import check as api_check

    sub = tmp_path / "me"
    sub.mkdir()
    shutil.copy(DEMO / "alice" / "1c.h5", sub / "wide.h5")  # a name that says no task: advice, before anything runs
    heard = []
    outcome = api_check(sub, TUTORIAL6, out_dir=tmp_path / "out", progress=lambda kind, value: heard.append(kind))
    assert capfd.readouterr().out == ""  # presenting is the CLI's business
    assert heard and heard[0] == "advice" and any("does not say which task" in a for a in outcome.advice)
    assert outcome.exit_code == 1 and "check on public validation data" in outcome.page.read_text()
    assert next(t for t in outcome.result.tasks if t.id == "1c").status == "passed"
