"""The batch's log: ``OUT/grader.log``, readable by the TA only, where what is not for the terminal goes.

The terminal shows the TA progress and plain-words warnings; internal errors with their tracebacks, and
whatever the libraries print on their own (Keras' and TensorFlow's warnings, deprecation notices, C++
logging), go to the log instead.  ``batch_log(path)`` opens it for one batch in the grading process: the
grader's logger and Python's warnings write to it, and ``$GRADER_LOG`` names it for the worker processes
the batch starts, which call ``worker_output_to_log()`` first thing so that their standard error (every
byte of it, from Python or C++) is appended there rather than to the TA's terminal.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("grader")
#: the environment variable that tells a batch's worker processes where its log is
LOG_ENV = "GRADER_LOG"


def _open_private(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)


@contextlib.contextmanager
def batch_log(path: Path):
    """For the duration of a batch: the grader's log and Python's warnings go to ``path`` (mode 600), and
    worker processes started meanwhile are told to send their standard error there too."""
    handler = logging.StreamHandler(os.fdopen(_open_private(path), "a", encoding="utf-8"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    warnings_log = logging.getLogger("py.warnings")
    previous_env = os.environ.get(LOG_ENV)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    warnings_log.addHandler(handler)
    warnings_log.propagate = False
    logging.captureWarnings(True)
    os.environ[LOG_ENV] = str(Path(path).resolve())
    try:
        yield handler
    finally:
        logging.captureWarnings(False)
        warnings_log.removeHandler(handler)
        log.removeHandler(handler)
        handler.close()
        if previous_env is None:
            os.environ.pop(LOG_ENV, None)
        else:
            os.environ[LOG_ENV] = previous_env


def worker_output_to_log() -> bool:
    """In a worker process of a batch: append this process's standard error (fd 2: Python's warnings and
    tracebacks, C++ logging) to the batch's log.  Nothing happens outside a batch (``grader check``
    keeps its output on the student's terminal).  Returns whether it redirected."""
    where = os.environ.get(LOG_ENV)
    if not where:
        return False
    try:
        fd = _open_private(Path(where))
    except OSError:
        return False  # the log is gone (the batch ended): keep the terminal rather than fail the worker
    os.dup2(fd, 2)  # Python's warnings are printed to sys.stderr, which writes to fd 2: they follow
    os.close(fd)
    return True
