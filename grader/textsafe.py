"""Making untrusted text safe for whoever reads it.

A student chooses their id (the name of their submission folder, or the
prefix of their file names) and, through file names, notebook errors and the
like, part of the messages and notes the grader writes about them.  Each
function here takes such text and returns it safe for one kind of reader:
a terminal (and rich's markup), an XML parser, a spreadsheet opening a CSV
file, a Markdown renderer and the HTML it allows, a page (``visible``, the
report templates' finalize), a JSON file (``json_text``; ``shown`` for one
whose strings are displayed, as Gradescope's).  None of them drops
information silently: a character that may not reach the reader is shown as a
visible escape (``\\x1b``, ``\\u202e``) instead.
"""
from __future__ import annotations

import html
import json
import re

from rich.markup import escape as _rich_escape

#: Unicode's bidirectional marks, embeddings, overrides and isolates, which reorder what a reader sees
#: ("Trojan Source"): in every set below
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"

#: lone surrogates: a notebook's JSON ("\\ud800") or a file name's undecodable bytes bring them; UTF-8 cannot
#: write them (a page's write raised), PostgreSQL's JSON refuses them: in every set below
_SURROGATES = "\ud800-\udfff"

#: C0 controls, DEL and C1 controls (ESC and CSI start terminal escape sequences), and the bidirectional ones
_TERMINAL_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]")

#: what a page shows as an escape: the same but tab and newline, which multi-line messages and code keep
_PAGE_UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]")

#: what XML 1.0 forbids (every C0 control but tab, newline and carriage return; lone surrogates;
#: U+FFFE and U+FFFF), what it discourages and no reader wants (DEL and the C1 controls), and the
#: bidirectional controls (a CI page shows the text)
_XML_UNSAFE = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}\ufffe\uffff]")

#: what a JSON file holds only as a ``\\uXXXX`` escape (json.dumps escapes the C0 controls itself)
_JSON_UNSAFE = re.compile(f"[\x7f-\x9f\u2028\u2029{_BIDI}{_SURROGATES}]")

#: line breaks of every kind, flattened where one record must stay on one line
_LINE_BREAKS = re.compile("\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")

#: a cell a spreadsheet evaluates: one starting (after any spaces) with = + - @ or their full-width forms
#: (OWASP's CSV injection advice), or with a tab, carriage return, newline or NUL
_FORMULA_START = re.compile("^\\s*[=+\\-@\uff1d\uff0b\uff0d\uff20]|^[\t\r\n\x00]")

#: ASCII punctuation that starts Markdown (GitHub's flavour: tables, strikethrough, math, mentions)
#: inside a line; ``<``, ``>`` and ``&`` become HTML entities instead
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~$@])")


def _shown(match: re.Match) -> str:
    """A character that may not reach the reader, written as a visible Python-style escape."""
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal(text: str) -> str:
    """``text`` safe to print with rich: no control characters (no escape sequences, no carriage returns
    overwriting a line, no forged new lines), no bidirectional overrides, and rich markup escaped, so a
    student named ``[bold]x`` or ``\\x1b[2J`` is printed as just that."""
    return _rich_escape(_TERMINAL_UNSAFE.sub(_shown, str(text)))


def visible(text: str) -> str:
    """``text`` for a page or an export someone reads: every control character but tab and newline (ESC,
    carriage return, C1) and every bidirectional control (U+202E ...) written as a visible escape, so
    nothing a student wrote colours, moves or reorders what the reader sees."""
    return _PAGE_UNSAFE.sub(_shown, str(text))


def shown(data):
    """``data`` (JSON-like: dicts, lists, strings, numbers) with ``visible`` applied to every string, keys
    included: for a file whose every string is displayed (Gradescope's ``results.json``)."""
    if isinstance(data, str):
        return visible(data)
    if isinstance(data, dict):
        return {shown(k) if isinstance(k, str) else k: shown(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [shown(v) for v in data]
    return data


def json_text(data, **dumps) -> str:
    """``json.dumps(data, ensure_ascii=False, **dumps)`` with no raw control or bidirectional character in
    the text: those are written as JSON's own ``\\uXXXX`` escapes, so the values read back unchanged."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(data, ensure_ascii=False, **dumps))


def xml_text(text: str) -> str:
    """``text`` as XML 1.0 allows it in element text and attribute values (ElementTree escapes ``<``,
    ``&`` and quotes itself, but writes forbidden characters as they are and so makes a file no parser
    reads), and with bidirectional controls shown as escapes."""
    return _XML_UNSAFE.sub(_shown, str(text))


def spreadsheet_cell(text: str) -> str:
    """A CSV text cell that a spreadsheet shows as text and never evaluates as a formula: one that would
    be evaluated gets a leading apostrophe, which Excel, LibreOffice and Google Sheets read as "text".
    Control characters (but tab and newline, which a quoted cell holds) and bidirectional ones are shown
    as escapes."""
    raw = str(text)
    text = _PAGE_UNSAFE.sub(_shown, raw)  # controls (but tab and newline) and bidi overrides shown, never raw
    return "'" + text if _FORMULA_START.match(raw) else text


def html_line(text: str) -> str:
    """``text`` as one line of inert HTML text (for raw HTML in Markdown, such as ``<summary>``, where
    Markdown escapes would show as backslashes): line breaks flattened, controls shown, ``<``, ``>`` and
    ``&`` as entities."""
    return html.escape(_TERMINAL_UNSAFE.sub(_shown, _LINE_BREAKS.sub(" ", str(text))), quote=False)


def markdown_text(text: str) -> str:
    """``text`` as inert Markdown inline text (a table cell, a list item, a heading): Markdown punctuation
    backslash-escaped (``|`` included, so a table cell stays one cell), then made one line of HTML text."""
    return html_line(_MARKDOWN_SPECIAL.sub(r"\\\1", str(text)))
