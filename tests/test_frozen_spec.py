"""The spec travels to workers as data: read once per batch, named by its hash, never read again.

A TA who edits (or breaks) the assignment folder while a batch runs must not change the spec under the
running workers: every student of a batch is graded by the bytes the batch read at its start."""
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, TEST_SECRET, TUTORIAL6
from grader.errors import SpecError
from grader.spec import freeze, load_assignment

COURSEWORK = ROOT / "reference" / "coursework"
DEMO = ROOT / "submissions" / "coursework"


def test_a_frozen_spec_is_the_folder_bytes_and_their_hash(tmp_path):
    folder = tmp_path / "tutorial6"
    shutil.copytree(TUTORIAL6, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "datasets.cpython-311.pyc").write_bytes(b"stale")
    outside = tmp_path / "private.txt"
    outside.write_text("not part of the spec")
    (folder / "linked.txt").symlink_to(outside)
    os.mkfifo(folder / "pipe")  # never opened: a read would wait for ever

    spec = freeze(folder)
    names = {name for name, _ in spec.files}
    assert {"assignment.toml", "calibration.toml", "datasets.py", "solution.ipynb"} <= names
    assert "linked.txt" not in names and "pipe" not in names  # no link, no pipe
    assert not any("__pycache__" in n for n in names)  # no compiled Python
    assert all(data == (folder / name).read_bytes() for name, data in spec.files)
    assert spec.digest == freeze(folder).digest  # the same bytes, the same name
    a = spec.parsed
    assert a.source == folder.resolve() and a.folder == folder.resolve() and a.digest == spec.digest
    assert a.root != folder.resolve() and (a.root / "assignment.toml").read_bytes() == \
        (folder / "assignment.toml").read_bytes()  # it reads its own copy, not the TA's folder
    assert oct(a.root.parent.stat().st_mode & 0o777) == "0o700"

    (folder / "assignment.toml").write_text((folder / "assignment.toml").read_text() + "\n# edited\n")
    assert freeze(folder).digest != spec.digest  # any edit is another spec


def test_a_worker_process_gets_the_parsed_spec_without_the_folder(tmp_path):
    folder = tmp_path / "tutorial6"
    shutil.copytree(TUTORIAL6, folder, ignore=shutil.ignore_patterns("__pycache__"))
    spec = freeze(folder)
    shutil.rmtree(folder)  # a Dask worker on another machine has no such folder either
    (tmp_path / "spec.pickle").write_bytes(pickle.dumps(spec))
    code = (
        "import pickle, sys, json\n"
        "from grader.spec import load_assignment\n"
        "spec = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "a = spec.here()\n"
        "fresh = load_assignment(a.root)\n"
        "import dataclasses\n"
        "same = dataclasses.replace(fresh, source=a.source, digest=a.digest) == a\n"
        "print(json.dumps({'root': str(a.root), 'same': same, 'again': spec.here() is a,\n"
        "                  'files': sorted(p.name for p in a.root.iterdir())}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "spec.pickle")], capture_output=True,
                         text=True, check=True, timeout=600)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["same"], "the spec a worker uses differs from one parsed from the same bytes"
    assert got["again"]  # written and moved once per process
    assert got["root"] != str(spec.parsed.root) and not got["root"].startswith(str(tmp_path))
    assert "datasets.py" in got["files"] and "assignment.toml" in got["files"]


def test_a_folder_too_large_to_ship_is_refused_naming_it(tmp_path, monkeypatch):
    from grader.spec import frozen

    folder = tmp_path / "tutorial6"
    shutil.copytree(TUTORIAL6, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "checkpoint.bin").write_bytes(b"\0" * 4096)
    monkeypatch.setattr(frozen, "MAX_SPEC_BYTES", 2048 + sum(p.stat().st_size for p in TUTORIAL6.glob("*")
                                                             if p.is_file()))
    with pytest.raises(SpecError, match="was not taken: the files together exceed") as e:
        freeze(folder)
    assert str(folder.resolve()) in str(e.value) and "keep only the spec" in str(e.value)


def test_a_broken_spec_is_named_by_the_folder_the_ta_gave(tmp_path):
    folder = tmp_path / "mine"
    shutil.copytree(TUTORIAL6, folder, ignore=shutil.ignore_patterns("__pycache__"))
    text = (folder / "assignment.toml").read_text().replace('title = ', 'titel = ', 1)
    (folder / "assignment.toml").write_text(text)
    with pytest.raises(SpecError) as e:
        freeze(folder)
    assert str(folder.resolve() / "assignment.toml") in str(e.value)
    assert "grader-spec-" not in str(e.value)
    with pytest.raises(SpecError, match="file not found"):
        freeze(tmp_path / "nowhere")


def test_editing_the_assignment_folder_mid_batch_changes_nothing_for_running_workers(tmp_path, monkeypatch):
    """The pool's workers start after the batch has begun; the folder is broken by then.  Each student is still
    graded, by the spec the batch read (and its gradebook names the TA's folder, not a copy)."""
    from grader.pipeline import BatchProgress, grade_batch
    from grader.store import Gradebook

    monkeypatch.setenv("GRADER_SECRET", TEST_SECRET)
    for k in [k for k in os.environ if k.startswith("COURSEWORK_HELDOUT")]:
        monkeypatch.delenv(k)
    folder = tmp_path / "coursework"
    shutil.copytree(COURSEWORK, folder, ignore=shutil.ignore_patterns("__pycache__"))
    subs = tmp_path / "subs"
    shutil.copytree(DEMO, subs)
    expected_points = load_assignment(folder).max_score

    class BreakTheFolder(BatchProgress):
        def started(self, total):
            (folder / "assignment.toml").write_text("this is not TOML [")
            (folder / "datasets.py").unlink()

    summary = grade_batch(subs, folder, tmp_path / "out", BreakTheFolder(), workers=2)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary.counts["measured"] >= 2 and len(results["students"]) >= 2
    for student in results["students"]:
        assert student["max_score"] == expected_points
        assert all(t["status"] != "error" for t in student["tasks"]), (student["id"], student["tasks"])
    gradebook = Gradebook(None, tmp_path / "out")
    try:
        assert gradebook.spec_folder(results["assignment"]) == str(folder.resolve())
    finally:
        gradebook.close()


def test_a_copy_left_by_a_killed_process_is_removed_and_a_live_ones_kept(tmp_path, monkeypatch):
    import tempfile

    from grader.spec import frozen

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # alive until killed below, however long the copy takes on a busy machine (a 60 s sleep could end first)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        orphan = tmp_path / f"grader-spec-0123456789ab-p{dead.pid}-xyz"
        running = tmp_path / f"grader-spec-0123456789ab-p{alive.pid}-xyz"
        mine = tmp_path / f"grader-spec-0123456789ab-p{os.getpid()}-xyz"
        unrelated = tmp_path / "grader-spec-notours"
        for d in (orphan, running, mine, unrelated):
            (d / "tutorial6").mkdir(parents=True)
        folder = tmp_path / "src" / "tutorial6"  # a spec this process has not copied yet
        shutil.copytree(TUTORIAL6, folder, ignore=shutil.ignore_patterns("__pycache__"))
        (folder / "assignment.toml").write_text((folder / "assignment.toml").read_text() + f"\n# {tmp_path}\n")
        spec = freeze(folder)  # a fresh copy: the orphans go first
        assert not orphan.exists() and running.is_dir() and mine.is_dir() and unrelated.is_dir()
        assert spec.parsed.root.parent.parent == tmp_path
        assert spec.parsed.root.parent.name.startswith(f"grader-spec-{spec.digest[:12]}-p{os.getpid()}-")
    finally:
        alive.kill()
        alive.wait()
