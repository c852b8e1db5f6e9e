"""`.py` scripts with `# %%` cell markers, read as notebooks."""
from __future__ import annotations

import re

import nbformat

MARKER = re.compile(r"^# ?%%(?P<rest>.*)$")


def script_to_notebook(text: str):
    """Split a percent-format script into cells (``# %% [markdown]`` cells become markdown)."""
    cells, kind, lines = [], "code", []

    def flush():
        body = "\n".join(lines).strip("\n")
        if body.strip():
            if kind == "markdown":
                body = "\n".join(re.sub(r"^# ?", "", line) for line in body.splitlines())
                cells.append(nbformat.v4.new_markdown_cell(body))
            else:
                cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        m = MARKER.match(line)
        if m:
            flush()
            lines = []
            kind = "markdown" if "[markdown]" in m.group("rest") else "code"
        else:
            lines.append(line)
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb
