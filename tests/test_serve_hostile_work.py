"""The work as it ran, against a hostile notebook run in the real sandboxed kernel: only what this run made.

A notebook file carries the outputs its author saved; cells the grader does not run (blank code, a
``grader-skip`` tag, the rest after a timeout) kept them, and the TA's "work as it ran" showed a student's
forged output as the run's.  Each test writes its own hostile notebook and runs it (``execute_notebook``)."""
from __future__ import annotations

import base64
import io
import json

import nbformat

from conftest import TUTORIAL6

FORGED = "FORGED: test accuracy 0.99"


def _png() -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 200, 0)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def _saved(text: str) -> list:
    """The outputs a student saves in the file: a line and a figure, neither made by any run."""
    return [nbformat.v4.new_output("stream", name="stdout", text=text + "\n"),
            nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"})]


def _kept(tmp_path, nb) -> tuple[dict, list]:
    """Run ``nb`` as ``measure`` does (the real sandboxed kernel); the work kept and the cells' statuses."""
    from grader.execute import execute_notebook
    from grader.harvest import Harvester
    from grader.intake import collect
    from grader.spec import load_assignment

    assignment = load_assignment(TUTORIAL6)
    folder = tmp_path / "subs" / "mallory"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / "work.ipynb")
    sub = collect(tmp_path / "subs", assignment)[0]
    with execute_notebook(assignment, sub.files[0], sub.root, harvester=Harvester(assignment), seed=1) as ex:
        return ex.executed, [c.status for c in ex.run.cells]


def test_outputs_saved_in_cells_the_grader_did_not_run_are_not_shown_as_the_run(tmp_path):
    nb = nbformat.v4.new_notebook()
    ran = nbformat.v4.new_code_cell("print('made by the run')")
    ran.outputs = _saved(FORGED + " (replaced by the run)")
    blank = nbformat.v4.new_code_cell("   \n")  # blank code: nbclient never runs it, its saved outputs stayed
    blank.outputs = _saved(FORGED)
    skipped = nbformat.v4.new_code_cell("print('never printed')", metadata={"tags": ["grader-skip"]})
    skipped.outputs = _saved(FORGED + " (skip tag)")
    nb.cells = [ran, blank, skipped]
    kept, statuses = _kept(tmp_path, nb)
    text = json.dumps(kept)
    assert "made by the run" in text
    assert FORGED not in text, [c.get("outputs") for c in kept["cells"]]
    assert not [o for c in kept["cells"] for o in c.get("outputs", []) if o["kind"] == "image"]


def _ran(tmp_path, monkeypatch, source: str):
    """Run a one-cell notebook of ``source`` (then a cell that prints "next"); the notebook as the runner left it."""
    from grader import execute

    reader, seen = execute.read_notebook, {}

    def read(file):
        seen["nb"] = reader(file)
        return seen["nb"]

    monkeypatch.setattr(execute, "read_notebook", read)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source), nbformat.v4.new_code_cell("print('next')")]
    kept, statuses = _kept(tmp_path, nb)
    return seen["nb"], kept, statuses


def _held(nb) -> int:
    """What the runner's notebook holds of outputs and metadata, in characters of JSON."""
    return len(json.dumps([c.get("outputs", []) for c in nb.cells])) + len(json.dumps(nb.metadata))


def test_twenty_thousand_empty_displays_are_not_all_held_by_the_grader(tmp_path, monkeypatch):
    # each counted as 0 bytes against the cell's 64 KB: every one was kept in the grading process
    nb, kept, statuses = _ran(tmp_path, monkeypatch,
                              "for _ in range(20_000):\n    display({'text/plain': ''}, raw=True)")
    assert statuses == ["ok", "ok"]
    assert len(nb.cells[0].outputs) <= 2001 and "dropped" in nb.cells[0].outputs[-1].get("text", "")
    assert nb.cells[1].outputs[0]["text"] == "next\n"


def test_display_updates_do_not_grow_a_cell_past_its_output_cap(tmp_path, monkeypatch):
    # update_display_data replaced a display's data whatever its size: 40 displays of 500 KB each were held
    nb, kept, statuses = _ran(tmp_path, monkeypatch,
                              "shown = [display({'text/plain': 'x'}, raw=True, display_id=True) for _ in range(40)]\n"
                              "for d in shown:\n    d.update({'text/plain': 'y' * 500_000}, raw=True)\n")
    assert statuses == ["ok", "ok"]
    assert _held(nb) < 200_000, _held(nb)

