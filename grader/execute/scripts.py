"""`.py` scripts read as notebooks: `# %%` cells as written, or a plain script split into cells.

A plain script (no cell markers, as many students hand in ``tut6_q1.py``) is
split at its top-level statements, a cell at each blank line between them, so
that one failing line does not lose the tasks after it; a script that does not
parse is split at its blank lines.
"""
from __future__ import annotations

import ast
import re

import nbformat

MARKER = re.compile(r"^# ?%%(?P<rest>.*)$")
#: a line only IPython runs: a shell command or a magic (``!pip install ...``, ``x = !ls``, ``%matplotlib inline``);
#: read as ``pass`` to find where a script's statements end (cut at blank lines instead, a docstring or a function
#: with a blank line in it was cut in two, and each half failed)
ESCAPE = re.compile(r"^([ \t]*)(?:[A-Za-z_]\w*[ \t]*=[ \t]*)?[!%]")


def _notebook(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def script_to_notebook(text: str):
    """A notebook of ``text``: percent-format cells (``# %% [markdown]`` cells become markdown) when it has
    cell markers, else ``plain_cells``.  A byte-order mark (Windows' Notepad and "UTF-8 with BOM" editors write
    one, and Python runs such a file) is dropped: kept, it is an invalid character in the cell of the imports."""
    text = text.removeprefix("\ufeff")
    lines = text.splitlines()
    if not any(MARKER.match(line) for line in lines):
        return _notebook([nbformat.v4.new_code_cell(c) for c in plain_cells(text)])
    cells, kind, body = [], "code", []

    def flush():
        block = "\n".join(body).strip("\n")
        if block.strip():
            if kind == "markdown":
                block = "\n".join(re.sub(r"^# ?", "", line) for line in block.splitlines())
                cells.append(nbformat.v4.new_markdown_cell(block))
            else:
                cells.append(nbformat.v4.new_code_cell(block))

    for line in lines:
        m = MARKER.match(line)
        if m:
            flush()
            body = []
            kind = "markdown" if "[markdown]" in m.group("rest") else "code"
        else:
            body.append(line)
    flush()
    return _notebook(cells)


def plain_cells(text: str) -> list[str]:
    """The cells of a script without markers: runs of top-level statements, broken at blank lines."""
    lines = text.splitlines()
    try:
        statements = ast.parse(text).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        try:  # a notebook exported by Colab keeps its `!pip install ...` lines, which only IPython reads
            statements = ast.parse("\n".join(ESCAPE.sub(r"\1pass  # ", line) for line in lines)).body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return [b for b in re.split(r"\n\s*\n", text) if b.strip()]  # let the kernel say what is wrong
    if not statements:
        return []
    cells, start = [], 0  # start: the first line of the cell being built
    for prev, stmt in zip(statements, statements[1:]):
        first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])]) - 1
        blank = [i for i in range(prev.end_lineno, first) if not lines[i].strip()]
        if blank:  # cut after the last blank line, so the comments just above a statement go with it
            cells.append("\n".join(lines[start:blank[-1] + 1]))
            start = blank[-1] + 1
    cells.append("\n".join(lines[start:]))
    return [c.strip("\n") for c in cells if c.strip()]
