"""Engines: a worker process that dies while measuring a student has that student measured again."""
import json
import os
import shutil
import signal
import threading
import time

import pytest

from conftest import TEST_SECRET, TUTORIAL6
from grader.execute.sandbox import bwrap_path

needs_sandbox = pytest.mark.skipif(not bwrap_path(), reason="bubblewrap is not installed (.ci/run installs it)")

SLOW = "# %%\nimport time\ntime.sleep(15)\n# %%\nprint('done')\n"


def _spawned_children() -> list[int]:
    """This process's direct children that are multiprocessing spawn workers."""
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry.name}/stat").read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = open(f"/proc/{entry.name}/cmdline", "rb").read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me and b"spawn_main" in cmd:
            found.append(int(entry.name))
    return found


@needs_sandbox
def test_a_killed_pool_worker_has_its_students_measured_again(tmp_path, model_dir, monkeypatch):
    from grader.pipeline import grade_batch

    monkeypatch.setenv("GRADER_SECRET", TEST_SECRET)
    for sid in ("slow1", "slow2"):
        (tmp_path / "subs" / sid).mkdir(parents=True)
        (tmp_path / "subs" / sid / "work.py").write_text(SLOW)
    (tmp_path / "subs" / "files").mkdir()
    shutil.copy(model_dir / "2a.h5", tmp_path / "subs" / "files" / "2a.h5")
    killed = []
    # spawned before the batch (an evaluation worker an earlier test of the session left running): not the pool's
    earlier = set(_spawned_children())

    def pool_workers() -> list[int]:
        return [pid for pid in _spawned_children() if pid not in earlier]

    def kill_the_workers_once():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            workers = pool_workers()
            if len(workers) == 2:
                time.sleep(7)  # both are inside a student (the notebooks sleep 15 s)
                for pid in pool_workers():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                return
            time.sleep(0.5)

    killer = threading.Thread(target=kill_the_workers_once)
    killer.start()
    summary = grade_batch(tmp_path / "subs", TUTORIAL6, tmp_path / "out", workers=2)
    killer.join()
    assert killed, "the pool's workers were never seen"
    students = {s["id"]: s for s in json.loads((tmp_path / "out" / "results.json").read_text())["students"]}
    assert set(students) == {"slow1", "slow2", "files"}
    for sid in ("slow1", "slow2"):  # measured again in a new pool, not given up on
        nb = students[sid]["notebooks"]
        assert nb and nb[0]["cells_failed"] == 0, students[sid]
    assert summary.counts["error"] == 0
