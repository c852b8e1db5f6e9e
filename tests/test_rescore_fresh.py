"""Re-scoring after a recalibration gives what a fresh grade gives: re-training is re-run where what it read
(K, the pass threshold) changed, and everyone else is only re-scored."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TUTORIAL6
from test_retrain import STUCK_SECRET
from test_validity import SHEET_2A, needs_sandbox

GRADER = [sys.executable, "-m", "grader.cli"]
DEMO = ROOT / "submissions" / "tutorial6"


def grader(*args):
    env = dict(os.environ, GRADER_SECRET=STUCK_SECRET)
    return subprocess.run(GRADER + [str(a) for a in args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=1800)


def rows(out: Path) -> list:
    """Every student's score and every task's score, status, metrics and message, as stored."""
    c = sqlite3.connect(f"file:{out / 'gradebook.sqlite'}?mode=ro", uri=True)
    try:
        return c.execute("""select s.student_id, r.score, t.task_id, t.score, t.status, t.metrics, t.message
                            from results r join students s on s.id = r.student
                            join task_results t on t.result = r.id order by 1, 3""").fetchall()
    finally:
        c.close()


def recalibrated(spec: Path, task: str, **values) -> None:
    """Edit ``[tasks.<task>.accuracy]`` of the spec copy's calibration.toml, as a new calibration would."""
    path = spec / "calibration.toml"
    text = path.read_text()
    start = text.index(f'[tasks."{task}".accuracy]')
    for key, value in values.items():
        line = text.index(f"\n{key} = ", start) + 1
        end = text.index("\n", line)
        text = text[:line] + f"{key} = {value}" + text[end:]
    path.write_text(text)


@needs_sandbox
def test_a_recalibration_rescores_to_what_a_fresh_grade_gives(tmp_path):
    klass = tmp_path / "class"
    (klass / "stuck").mkdir(parents=True)
    (klass / "stuck" / "work.py").write_text(SHEET_2A)  # its own 2a run gets stuck: its recipe is re-trained
    shutil.copytree(DEMO / "bob", klass / "bob")  # model files only: nothing to re-train
    spec = tmp_path / "tutorial6"
    shutil.copytree(TUTORIAL6, spec)
    out = tmp_path / "out"
    first = grader("grade", klass, "-a", spec, "-o", out, "--workers", 1)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {r[0]: r for r in rows(out) if r[2] == "2a"}
    assert before["stuck"][4] == "passed" and "re-trained by the grader" in before["stuck"][6]
    assert json.loads(before["stuck"][5])["retrainings"] < 3  # the premise: it stopped at the first that passed

    # the recalibration: K from 9 to 3, the pass threshold beyond any re-training's reach
    recalibrated(spec, "2a", retrainings=3, **{"pass": 0.9995})
    again = grader("grade", klass, "-a", spec, "-o", out, "--workers", 1)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 run, 1 re-scored, 0 unchanged" in again.stderr, again.stderr[-2000:]

    fresh = tmp_path / "fresh"
    proc = grader("grade", klass, "-a", spec, "-o", fresh, "--workers", 1, "--force")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rows(out) == rows(fresh)  # row for row: scores, statuses, metrics and messages
    stuck = {r[2]: r for r in rows(out) if r[0] == "stuck"}["2a"]
    assert "re-trained by the grader 3 times" in stuck[6] and stuck[4] == "partial"
    scored = lambda path: [(s["id"], s["score"], s["tasks"])  # noqa: E731
                           for s in json.loads((path / "results.json").read_text())["students"]]
    assert scored(out) == scored(fresh)
