"""What is not for the TA's terminal goes to the batch's log: library warnings, worker stderr."""
import os
import stat
import subprocess
import sys
import warnings

import pytest

from grader.logs import LOG_ENV, batch_log

WORKER = """
import os, warnings
from grader.logs import worker_output_to_log
assert worker_output_to_log()
warnings.warn("keras says something about input_dim", UserWarning)
os.write(2, b"I0000 a C++ log line\\n")
"""


def test_a_worker_of_a_batch_writes_its_stderr_and_warnings_to_the_log(tmp_path):
    log = tmp_path / "grader.log"
    env = dict(os.environ, **{LOG_ENV: str(log)})
    proc = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # nothing reached the terminal
    text = log.read_text()
    assert "keras says something about input_dim" in text and "a C++ log line" in text
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_outside_a_batch_a_worker_keeps_its_output(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != LOG_ENV}
    code = "from grader.logs import worker_output_to_log as w; import sys; sys.exit(0 if not w() else 3)"
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=600).returncode == 0


def test_during_a_batch_python_warnings_go_to_the_log_and_the_env_names_it(tmp_path, capfd):
    log = tmp_path / "grader.log"
    with batch_log(log):
        assert os.environ[LOG_ENV] == str(log.resolve())
        warnings.warn("a library warning in the grading process", UserWarning)
    assert LOG_ENV not in os.environ
    assert "a library warning in the grading process" in capfd.readouterr().err + log.read_text()
    assert "a library warning in the grading process" in log.read_text()
    with pytest.warns(UserWarning):  # Python's own handling again, not the log
        warnings.warn("after the batch", UserWarning)
    assert "after the batch" not in log.read_text()


class Recorder:
    """A caller's hooks (grader.pipeline.BatchProgress), recording what the batch said."""

    def __init__(self):
        self.events = []

    def __getattr__(self, name):
        return lambda *args, **kw: self.events.append((name, args, kw))


@pytest.mark.slow
def test_a_batch_prints_nothing_and_tells_its_caller_through_hooks(tmp_path, capfd):
    from conftest import TUTORIAL6, small_model
    from grader.api import grade_batch

    (tmp_path / "subs" / "ann").mkdir(parents=True)
    small_model().save(tmp_path / "subs" / "ann" / "2a.h5")
    capfd.readouterr()  # what importing Keras printed in this process, before the batch
    hooks = Recorder()
    summary = grade_batch(tmp_path / "subs", TUTORIAL6, tmp_path / "out", hooks, workers=1)
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""  # the worker's own stderr went to the batch's log
    names = [e[0] for e in hooks.events]
    assert names.index("started") < names.index("student_done") < names.index("finished")
    assert ("started", (1,), {}) in hooks.events and summary.students == 1
    assert any(name == "secret_created" for name, _, _ in hooks.events)  # said to the caller, not printed
    assert (tmp_path / "out" / "grader.log").exists()
