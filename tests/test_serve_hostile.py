"""``grader serve`` and the work as it ran, attacked: by a student's notebook, and on the TA's machine.

Each test writes its own hostile submission (a notebook, a student id, a request) and asserts what the
TA's page, the gradebook or the server does with it.  Fast: the real ``executed.keep``, a real gradebook
(SQLite) and the real Flask app through its test client; runs in the sandboxed kernel are in
``test_serve_hostile_work``."""
from __future__ import annotations

import json

import nbformat
import pytest

from grader import executed

MB4 = executed.MAX_NOTEBOOK_BYTES


def _size(kept: dict) -> int:
    return len(json.dumps(kept, ensure_ascii=False).encode())


def test_a_notebook_of_long_cells_in_four_byte_characters_is_kept_within_its_bound():
    nb = nbformat.v4.new_notebook()  # 400 cells of 20,000 emoji: 32 MB of code, which was kept whole
    nb.cells = [nbformat.v4.new_code_cell("\U0001F600" * executed.MAX_SOURCE_CHARS) for _ in range(400)]
    kept = executed.keep("big.ipynb", nb)
    assert _size(kept) <= MB4 + 64 * 1024
    assert any("were not kept: the notebook is larger than the 4 MB kept" in n for n in kept["notes"])
    assert kept["cells"][0]["source"].startswith("\U0001F600")


def test_two_hundred_thousand_empty_outputs_are_bounded():
    cell = nbformat.v4.new_code_cell("for _ in range(200_000): display({'text/plain': ''}, raw=True)")
    cell.outputs = [{"output_type": "display_data", "data": {"text/plain": ""}, "metadata": {}}] * 200_000
    nb = nbformat.v4.new_notebook()
    nb.cells = [cell, nbformat.v4.new_code_cell("print('after')")]
    kept = executed.keep("many.ipynb", nb)
    assert _size(kept) <= MB4 + 64 * 1024
    outs = kept["cells"][0]["outputs"]
    assert len(outs) < 100_000 and "larger than the 4 MB kept" in outs[-1]["text"]
    assert len(executed.render("mallory", [kept]).encode()) <= 4 * MB4  # the page drawn from it, bounded too
