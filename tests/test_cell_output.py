"""A cell's output, read from the real sandboxed kernel by a grading process slower than the kernel.

nbclient stops reading a cell's output 4 s after the cell's reply (its ``iopub_timeout``), with a log line
only: on a busy machine the last prints of a print-heavy cell were lost from the work as it ran, and nothing
said so.  The grader waits ``runner.IOPUB_GRACE_S`` and names what it still cuts.  A slow reader is made
deterministic here: each output message the grading process takes costs it 20 ms (500 prints: over 10 s)."""
from __future__ import annotations

import time

import nbformat
import pytest

from conftest import TUTORIAL6

PRINTS = "for i in range(500):\n    print(i, flush=True)"


@pytest.fixture
def slow_reader(monkeypatch):
    from grader.execute import runner

    output = runner.CappedClient.output

    def slow(self, outs, msg, display_id, cell_index):
        time.sleep(0.02)
        return output(self, outs, msg, display_id, cell_index)

    monkeypatch.setattr(runner.CappedClient, "output", slow)


def _run(tmp_path, *sources):
    from grader.execute import execute_notebook
    from grader.harvest import Harvester
    from grader.intake import collect
    from grader.spec import load_assignment

    assignment = load_assignment(TUTORIAL6)
    folder = tmp_path / "subs" / "ada"
    folder.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, folder / "work.ipynb")
    sub = collect(tmp_path / "subs", assignment)[0]
    with execute_notebook(assignment, sub.files[0], sub.root, harvester=Harvester(assignment), seed=1) as ex:
        return ex


def _lines(cell) -> int:
    return sum(o.get("text", "").count("\n") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_a_grader_slow_to_read_output_keeps_every_print_of_a_cell(tmp_path, slow_reader):
    ex = _run(tmp_path, PRINTS, "print('next')")
    assert [c.status for c in ex.run.cells] == ["ok", "ok"]
    assert not any(c.output_cut for c in ex.run.cells)
    cells = ex.executed["cells"]
    text = "".join(o.get("text", "") for o in cells[0]["outputs"])
    assert text.splitlines() == [str(i) for i in range(500)]  # nbclient's 4 s kept fewer than 400
    assert not [n for n in ex.notes if "still arriving" in n]


def test_output_still_arriving_after_the_grace_is_named_and_the_next_cell_keeps_its_own(tmp_path, slow_reader,
                                                                                        monkeypatch):
    from grader.execute import runner

    monkeypatch.setattr(runner, "IOPUB_GRACE_S", 1)
    ex = _run(tmp_path, PRINTS, "print('next')")
    assert [c.status for c in ex.run.cells] == ["ok", "ok"]
    assert [c.output_cut for c in ex.run.cells] == [True, False]
    note = [n for n in ex.notes if "still arriving" in n]
    assert note and "cell(s) 1 " in note[0], ex.notes
    second = "".join(o.get("text", "") for o in ex.executed["cells"][1]["outputs"])
    assert second == "next\n"  # the first cell's late output is not taken as the second's


def test_a_cell_that_prints_faster_than_a_stalled_grader_reads_loses_nothing(tmp_path, monkeypatch):
    # the grading process stops reading for 8 s at the cell's first output while the kernel prints 6000 lines:
    # with ZMQ's 1000-message queue the kernel's output socket dropped the rest, "idle" with it, and the grader
    # waited out its grace for a cell that had ended
    from grader.execute import runner

    output, stalled = runner.CappedClient.output, []

    def stall_once(self, outs, msg, display_id, cell_index):
        if not stalled:
            stalled.append(time.sleep(8))
        return output(self, outs, msg, display_id, cell_index)

    monkeypatch.setattr(runner.CappedClient, "output", stall_once)
    ex = _run(tmp_path, "for i in range(6000):\n    print(i, flush=True)", "print('next')")
    assert [c.status for c in ex.run.cells] == ["ok", "ok"]
    assert [c.output_cut for c in ex.run.cells] == [False, False]
    text = "".join(o.get("text", "") for o in ex.executed["cells"][0]["outputs"])
    assert text.splitlines() == [str(i) for i in range(6000)]
