"""`grader check`: a student's own check on public data; verdicts, fixes, exit codes, and never the secret."""
import os
import re
import shutil
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT, TUTORIAL6, needs_sandbox, small_model
from grader.check import CheckEvents


class _Heard(CheckEvents):
    """What a check tells its events, by kind, in order."""

    def __init__(self, heard: list):
        super().__init__()
        self.note = lambda words: heard.append("note")
        self.unsandboxed = lambda reason: heard.append("unsandboxed")
        self.advice = lambda line: heard.append("advice")
        self.limits = lambda words: heard.append("limits")
        self.running = lambda file: heard.append("running")
        self.ran = lambda run: heard.append("cell")

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


def test_the_check_api_prints_nothing_and_reports_through_its_events(tmp_path, capfd):
    from grader.api import check as api_check

    sub = tmp_path / "me"
    sub.mkdir()
    shutil.copy(DEMO / "alice" / "1c.h5", sub / "wide.h5")  # a name that says no task: advice, before anything runs
    heard = []
    outcome = api_check(sub, TUTORIAL6, out_dir=tmp_path / "out", events=_Heard(heard))
    assert capfd.readouterr().out == ""  # presenting is the CLI's business
    assert heard and heard[0] == "advice" and any("does not say which task" in a for a in outcome.advice)
    assert outcome.exit_code == 1 and "check on public validation data" in outcome.page.read_text()
    assert next(t for t in outcome.result.tasks if t.id == "1c").status == "passed"


# -- check says one thing ------------------------------------------------------------------------------------

#: the sheet's 2a as calibration trains it, under the calibration seed at which its own run gets stuck at the
#: majority class (test_retrain.STUCK_SEED), written with Keras 2's input_dim (a Keras UserWarning), and saved
STUCK_2A = """import numpy as np, keras
from tools import gen_simple_circular_distribution
X, y = gen_simple_circular_distribution(200, rng=np.random.default_rng(1006))
keras.utils.set_random_seed(1006)
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation='relu'),
                          keras.layers.Dense(4, activation='relu'), keras.layers.Dense(2, activation='softmax')])
model.compile(loss='categorical_crossentropy', optimizer='sgd')
model.fit(X, keras.utils.to_categorical(y, 2), epochs=250, batch_size=32, verbose=0)
model.save('model.h5')
extra = keras.Sequential([keras.layers.Dense(3, activation='relu', input_dim=1), keras.layers.Dense(1)])"""


def _verdicts(text, html):
    """Per task, (status, points) on the terminal and on the page."""
    said = {m[0]: (m[1], m[2]) for m in re.findall(r"task (\w+)(?: \(optional\))?: (\w+) ([\d.]+)/[\d.]+", text)}
    page = {m[0]: (m[1], m[2]) for m in re.findall(
        r'<a href="#task-(\w+)">.*?<span class="status (\w+)">.*?<td>([\d.]+) / [\d.]+</td>', html, re.S)}
    return said, page


@needs_sandbox
def test_the_terminal_never_contradicts_the_page_and_says_when_a_retraining_earned_the_credit(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(STUCK_2A)])
    sub = tmp_path / "work"
    sub.mkdir()
    nbformat.write(nb, sub / "stuck.ipynb")
    proc, text, html = check(sub, tmp_path)
    said, page = _verdicts(text, html)
    assert said and said == page, (said, page)
    line = next(ln for ln in text.splitlines() if "task 2a:" in ln)
    assert "passed 15/15" in line and "re-trained by the grader" in html
    own = re.search(r"your run: accuracy ([\d.]+); your recipe re-trained reached ([\d.]+) \(pass ≥ ([\d.]+)\)", line)
    assert own, line
    assert float(own[1]) < float(own[3]) <= float(own[2])  # the premise (stuck), and what earned the pass
    assert "Running stuck.ipynb, cell by cell:" in text  # the run log names its file
    # the same model, saved: its recipe's credit, as 2a's (it was "stuck", 5/10), and the page says so too
    three = next(ln for ln in text.splitlines() if "task 3:" in ln)
    assert "passed 10/10" in three and "not a trained one" not in three, three
    assert "training got stuck on the seed the grader gave it" in html
    for noise in ("UserWarning", "input_dim", "absl", "WARNING:", "cudart"):  # the libraries' words stay off it
        assert noise not in text, noise


@needs_sandbox
def test_check_dot_in_a_kit_folder_checks_only_the_students_files(tmp_path):
    from grader.kit import build_kit

    folder = build_kit(TUTORIAL6, tmp_path / "tutorial6-kit")
    shutil.copy(DEMO / "alice" / "1c.h5", folder / "1c.h5")
    (folder / "scratch.py").write_text("import numpy as np\nprint(np.zeros(3))\n")  # the student's own script
    earlier = folder / "grader-check" / "students"
    earlier.mkdir(parents=True)
    (earlier / "tutorial6-kit.html").write_text("<html><p>an earlier check</p></html>")
    env = {k: v for k, v in os.environ.items() if k not in ("GRADER_SECRET", "GRADER_ASSIGNMENT")}
    env["COLUMNS"] = "200"
    proc = subprocess.run([sys.executable, "-m", "grader.cli", "check", "."], capture_output=True, text=True,
                          env=env, cwd=folder, timeout=600)
    text = proc.stdout + proc.stderr
    assert "task 1c: passed" in text, text[-3000:]
    assert "Running scratch.py, cell by cell:" in text
    assert "Running datasets.py" not in text  # the kit's generators are not a student script
    assert ("Not checked: the kit's own files (assignment.toml, README.txt, calibration.toml, datasets.py, "
            "grader-0.1.0-py3-none-any.whl, requirements.lock)") in " ".join(text.split())
    assert "this check's earlier output in grader-check/" in " ".join(text.split())
    html = (folder / "grader-check" / "students" / "tutorial6-kit.html").read_text()
    assert "Not checked: the kit&#39;s own files" in html or "Not checked: the kit's own files" in html
    files = re.findall(r"<tr><td>([^<]+)</td><td>", html.split("<h2>Files</h2>")[1])
    assert sorted(files) == ["1c.h5", "scratch.py"], files


@needs_sandbox
def test_a_file_a_failed_save_left_broken_is_named_as_such(tmp_path):
    cells = ["import numpy as np, keras\n"
             "class Odd(keras.layers.Layer):\n"
             "    def __init__(self, table=None, **kw):\n"
             "        super().__init__(**kw)\n        self.table = table\n"
             "    def get_config(self):\n        return {**super().get_config(), 'table': self.table}\n"
             "    def call(self, x):\n        return x\n"
             "model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation='softmax'), "
             "Odd(table=object())])",
             "model.save('model.h5')"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbformat.write(nb, tmp_path / "save.ipynb")
    proc, text, html = check(tmp_path / "save.ipynb", tmp_path)
    line = text[text.index("task 3:"):]
    assert "model.h5: this HDF5 file is incomplete" in line, line[:600]
    assert "the model.save that wrote it failed" in line and "save_weights" not in line
