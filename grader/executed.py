"""The executed notebook, kept: a student's notebook or script cell by cell, as it ran, with its outputs.

``keep`` turns the notebook nbclient ran (outputs in place) into plain data,
bounded and sanitised: text outputs as text (terminal colours stripped; shown
escaped), errors as their name, value and traceback, images only as PNG that
Pillow decodes and writes again (anything else, and every HTML, JavaScript,
SVG or widget output, is replaced by a line saying what was dropped).  It
travels in the student's ``Measurements`` (``executed``) and so is stored in
the gradebook with them; ``render`` draws it as an HTML page (the static
``students/<id>.work.html`` and ``grader serve``'s student page).
"""
from __future__ import annotations

import base64
import io
import re

#: the cells kept of one notebook, the characters of a cell's code, of one cell's text outputs, the bytes of
#: one image, and of everything kept of one notebook (text and images together): beyond them a line says so
MAX_CELLS = 400
MAX_SOURCE_CHARS = 20_000
MAX_CELL_TEXT = 64 * 1024
MAX_IMAGE_BYTES = 1 << 20
MAX_IMAGE_PIXELS = 4_000_000
MAX_NOTEBOOK_BYTES = 4 << 20

#: what each kept cell or output costs of the notebook's bound beside its text (its JSON and HTML around it), so
#: that 200,000 empty outputs are bounded too
ITEM_BYTES = 64

#: the cell tag the runner skips (``runner.NotebookRunner``'s nbclient ``skip_cells_with_tag``)
SKIP_TAG = "grader-skip"

#: terminal escape sequences (colours in tracebacks and progress bars)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value) -> str:
    """Text as kept: colour codes stripped; lone surrogates (a notebook's JSON may hold them; no page, UTF-8 file
    or PostgreSQL JSON takes them) as visible escapes."""
    text = "".join(str(v) for v in value) if isinstance(value, list) else str(value or "")
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", _ANSI.sub("", text))


def _bytes(text: str) -> int:
    """What ``text`` takes in the gradebook and on the page (UTF-8): the bound is in bytes, not characters."""
    return len(text.encode("utf-8", "replace"))


def _cut(text: str, chars: int, room: int) -> str:
    """``text`` within ``chars`` characters and ``room`` bytes, with a line saying how much was left out."""
    kept = text[:chars]
    if _bytes(kept) > room:
        kept = kept.encode("utf-8", "replace")[:max(0, room)].decode("utf-8", "ignore")
    return kept if len(kept) == len(text) else kept + f"\n[... {len(text) - len(kept)} more characters]"


def clean_png(data) -> bytes | None:
    """The PNG image ``data`` (base64 text, as a notebook holds it) decoded, checked and written again by
    Pillow (its pixels only: no text chunks, no trailing bytes); None when it is no PNG, too large or broken."""
    try:
        raw = base64.b64decode("".join(data) if isinstance(data, list) else str(data), validate=False)
    except (ValueError, TypeError):
        return None
    if len(raw) > MAX_IMAGE_BYTES or not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(raw), formats=["PNG"]) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                return None
            img.load()
            if img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
                img = img.convert("RGBA")
            # its pixels (and palette and transparency) only: Pillow writes the ICC colour profile it read back
            # unless told not to, a binary the TA's browser would parse
            img.info = {k: v for k, v in img.info.items() if k == "transparency"}
            out = io.BytesIO()
            img.save(out, format="PNG")
    except Exception:  # Pillow's errors for a broken or hostile file are of many kinds
        return None
    return out.getvalue() if len(out.getvalue()) <= MAX_IMAGE_BYTES else None


def _outputs(cell, budget: list[int]) -> list[dict]:
    """A code cell's outputs as kept: [{"kind": "text" | "error" | "image" | "dropped", ...}]."""
    kept, text_used = [], 0
    for out in cell.get("outputs", []) or []:
        if budget[0] <= 0:
            kept.append({"kind": "dropped", "text": "[the rest of this notebook's output was not kept: it is "
                                                    f"larger than the {MAX_NOTEBOOK_BYTES >> 20} MB kept]"})
            break
        kind = out.get("output_type")
        if kind == "stream":
            item = {"kind": "text", "name": "stderr" if out.get("name") == "stderr" else "stdout",
                    "text": _text(out.get("text"))}
        elif kind == "error":
            lines = out.get("traceback") or []
            item = {"kind": "error", "text": _text("\n".join(str(x) for x in lines[-50:]) if isinstance(lines, list)
                                                   else "") or f"{_text(out.get('ename'))}: {_text(out.get('evalue'))}"}
        elif kind in ("execute_result", "display_data"):
            data = out.get("data") or {}
            if "image/png" in data:
                png = clean_png(data["image/png"])
                if png is not None and len(png) * 4 // 3 <= budget[0]:
                    budget[0] -= ITEM_BYTES + len(png) * 4 // 3
                    kept.append({"kind": "image", "png": base64.b64encode(png).decode("ascii")})
                    continue
                item = {"kind": "dropped", "text": "[an image that is not a valid PNG within "
                                                   f"{MAX_IMAGE_BYTES >> 20} MB was not kept]" if png is None else
                        f"[an image was not kept: the notebook is larger than the {MAX_NOTEBOOK_BYTES >> 20} MB kept]"}
            elif "text/plain" in data:
                item = {"kind": "text", "name": "result", "text": _text(data["text/plain"])}
                rich = sorted(str(k) for k in data if k != "text/plain")[:3]
                if rich:  # an HTML, JavaScript, ... form beside it: named, never shown
                    budget[0] -= ITEM_BYTES + _bytes(item["text"])
                    kept.append(item)
                    item = {"kind": "dropped", "text": f"[its {', '.join(rich)} form is not shown]"}
            else:
                shown = ", ".join(sorted(str(k) for k in data)[:3]) or "nothing"
                item = {"kind": "dropped", "text": f"[an output of {shown} is not shown]"}
        else:
            continue
        if item["kind"] in ("text", "error"):
            room = min(MAX_CELL_TEXT - text_used, budget[0])
            if room <= 0:
                continue
            if len(item["text"]) > room:
                item["text"] = item["text"][:room] + f"\n[output beyond {MAX_CELL_TEXT // 1024} KB of this cell " \
                                                     "was not kept]"
            text_used += len(item["text"])
        budget[0] -= ITEM_BYTES + _bytes(item.get("text", ""))
        kept.append(item)
    return kept


def keep(name: str, nb, run=None) -> dict:
    """The notebook ``nb`` as it ran (``run``: its ``runner.RunResult``, for each cell's status and time)."""
    runs = {c.index: c for c in (run.cells if run is not None else [])}
    budget = [MAX_NOTEBOOK_BYTES]
    cells, notes = [], []
    for index, cell in enumerate(nb.cells):
        if index >= MAX_CELLS:
            notes.append(f"Only the first {MAX_CELLS} of its {len(nb.cells)} cells were kept.")
            break
        if budget[0] <= 0:
            notes.append(f"Cells {index + 1} to {len(nb.cells)} were not kept: the notebook is larger than the "
                         f"{MAX_NOTEBOOK_BYTES >> 20} MB kept.")
            break
        source = _cut(_text(cell.get("source")), MAX_SOURCE_CHARS, budget[0])
        budget[0] -= ITEM_BYTES + _bytes(source)
        entry = {"index": index + 1, "type": "code" if cell.get("cell_type") == "code" else "text",
                 "source": source}
        if entry["type"] == "code":
            skipped = SKIP_TAG in ((cell.get("metadata") or {}).get("tags") or [])
            ran = None if skipped else runs.get(index)  # nbclient skips a tagged cell, and the runner says "ok"
            entry.update(status=f"not run (tagged {SKIP_TAG})" if skipped else ran.status if ran else "not run",
                         seconds=round(ran.seconds, 1) if ran else None, outputs=_outputs(cell, budget))
        cells.append(entry)
    return {"name": _text(name), "cells": cells, "notes": notes}


#: how a model captured from a run is named (``measure``): "<notebook>, cell <n>: model trained by ..."
_CAPTURED = re.compile(r"(?P<nb>.+), cell (?P<cell>\d+): ")


def models_by_cell(files) -> dict[tuple[str, int], list[dict]]:
    """The models each cell made, from a result's files (``FileResult``s or their JSON; captured ones only):
    (notebook, cell) -> [{"name", "task", "outcome"}], so that a cell shows which task its model became."""
    out: dict[tuple[str, int], list[dict]] = {}
    for f in files or []:
        get = f.get if isinstance(f, dict) else (lambda key, f=f: getattr(f, key, None))
        m = _CAPTURED.match(str(get("name") or ""))
        if m and get("captured"):  # the grader's record, not the name: a file may be named like a capture
            out.setdefault((m["nb"], int(m["cell"])), []).append(
                {"name": get("name"), "task": get("task"), "outcome": get("outcome")})
    return out


def _env():
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    from .textsafe import visible

    def finalize(value):
        if isinstance(value, Markup):
            return value
        return visible(value) if isinstance(value, str) else value

    return Environment(loader=PackageLoader("grader.serve", "templates"), finalize=finalize,
                       autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True,
                       lstrip_blocks=True)


def render(student_id: str, notebooks: list[dict], *, title: str = "", back: str | None = None,
           files=()) -> str:
    """A whole HTML page of the student's executed notebooks (the static ``students/work/<name>.html``);
    ``files``: the result's files, to say which task each captured model became."""
    return _env().get_template("work_page.html").render(student_id=student_id, notebooks=notebooks, title=title,
                                                         back=back, models=models_by_cell(files))
