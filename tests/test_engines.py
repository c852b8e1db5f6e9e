"""Engines: a worker process that dies while measuring a student has that student measured again; the workers of
a machine the batch did not prepare build its kernels' compile cache, once."""
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import TEST_SECRET, TUTORIAL6, needs_sandbox


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


def _runs_a_kernel(pid: int) -> bool:
    """Whether a process below ``pid`` is a notebook's kernel (``ipykernel``): the worker is inside a student."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = open(f"/proc/{entry.name}/stat").read()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    below = list(children.get(pid, []))
    while below:
        child = below.pop()
        try:
            if b"ipykernel" in open(f"/proc/{child}/cmdline", "rb").read():
                return True
        except OSError:
            continue
        below.extend(children.get(child, []))
    return False


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
        # no clock: the batch may first build the compile cache (or wait for another process building it),
        # and on a busy machine that took minutes.  The workers are killed once one of them runs a student's
        # kernel (it is inside a student: the notebooks sleep 15 s), seen in the process tree, not guessed
        while not batch_over.is_set() and not killed:
            workers = pool_workers()
            if any(_runs_a_kernel(pid) for pid in workers):
                for pid in workers:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                return
            time.sleep(0.2)

    batch_over = threading.Event()
    killer = threading.Thread(target=kill_the_workers_once)
    killer.start()
    try:
        summary = grade_batch(tmp_path / "subs", TUTORIAL6, tmp_path / "out", workers=2)
    finally:
        batch_over.set()
        killer.join()
    assert killed, "the pool's workers were never seen"
    students = {s["id"]: s for s in json.loads((tmp_path / "out" / "results.json").read_text())["students"]}
    assert set(students) == {"slow1", "slow2", "files"}
    for sid in ("slow1", "slow2"):  # measured again in a new pool, not given up on
        nb = students[sid]["notebooks"]
        assert nb and nb[0]["cells_failed"] == 0, students[sid]
    assert summary.counts["error"] == 0


#: a process of a machine's batch or worker asking for its kernels' compile cache (``compile_cache.for_kernels``),
#: with the XLA compilation of the build replaced by a stand-in that takes a second and says it ran: what is
#: tested is that the processes of one machine build the folder once, not the compiling
ASK_FOR_CACHE = """
import json, os, sys, time
from pathlib import Path
from grader.execute import compile_cache
from grader.spec import load_assignment

def stand_in(assignment, final, timeout):
    with open(sys.argv[2], "a") as log:
        log.write(f"{os.getpid()}\\n")
    time.sleep(1.0)
    building = final.parent / ".building-test"
    building.mkdir()
    (building / compile_cache.MANIFEST).write_text("{}")
    os.rename(building, final)
    return final

compile_cache._build = stand_in
print(compile_cache.for_kernels(load_assignment(sys.argv[1])))
"""


@needs_sandbox
def test_the_processes_of_one_machine_build_the_kernels_compile_cache_once(tmp_path):
    """A Dask worker on a machine the batch did not build the cache on builds it with its first notebook; when
    several workers of that machine start at once, one builds and the others wait for it."""
    import subprocess
    import sys

    env = {**os.environ, "GRADER_CACHE_DIR": str(tmp_path / "cache"), "GRADER_FUSED": "1"}
    builds = tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", ASK_FOR_CACHE, str(TUTORIAL6), str(builds)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    said = [p.communicate(timeout=600) for p in procs]
    folders = {out.strip() for out, _ in said}
    assert len(folders) == 1 and all(p.returncode == 0 for p in procs), said
    assert len(builds.read_text().split()) == 1  # built once; the other two waited and found it
    folder = Path(folders.pop())
    assert folder.parent == tmp_path / "cache" / "jax" and (folder / "manifest.json").is_file()


@needs_sandbox
def test_a_worker_asks_for_the_compile_cache_before_a_notebook_not_before_saved_models(tmp_path, monkeypatch):
    from grader.engines import InlineEngine, Job, measure_job
    from grader.evaluate import dataset_seeds
    from grader.execute import compile_cache
    from grader.intake import collect
    from grader.spec import freeze

    asked = []
    real = compile_cache.for_kernels
    monkeypatch.setattr(compile_cache, "for_kernels", lambda a: asked.append(a.id) or real(a))
    spec = freeze(TUTORIAL6)
    seeds = tuple(sorted(dataset_seeds(spec.parsed, TEST_SECRET).items()))
    demo = TUTORIAL6.parent.parent / "submissions" / "tutorial6"
    for who in ("bob", "frank"):
        shutil.copytree(demo / who, tmp_path / "class" / who)
    bob, frank = sorted(collect(tmp_path / "class", spec.parsed), key=lambda s: s.student_id)
    engine = InlineEngine(spec, dict(seeds))
    try:
        measure_job(Job(spec, seeds, bob))
        assert asked == []  # saved models only: no kernel, no cache
        measured, _, _ = measure_job(Job(spec, seeds, frank))
        assert asked == [spec.parsed.id] and measured.notebooks
    finally:
        engine.close()
