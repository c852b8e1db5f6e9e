"""The package's boundaries, read from its source with ``ast`` (no import, no kernel): the stages import only
earlier stages (lazy imports inside functions included), no two stages import each other, no function runs
past 80 lines and no module docstring past 15.  The rules are written once, here; docs/design/stages.md says
why."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "grader"

#: the stages in the pipeline's order: a stage may import itself, the stages before it and the bottom, never a
#: stage after it.  Stages in one tuple are siblings: neither imports the other, save by ``SIBLING_ARROWS``.
ORDER = ("spec", "intake", "execute", "harvest", "evaluate", "assess", "measure", "retrain", "score", "review",
         ("report", "store", "export"))
SIBLING_ARROWS = {("export", "report")}  # export writes with report's atomic_write and safe_name
#: stages that may import less than the order allows: the gradebook keeps records; it applies no stage's logic
ONLY = {"store": {"spec"}}
#: top-level modules that belong to a stage
TOP_LEVEL_STAGE = {"assess": "assess", "keras_io": "evaluate", "review": "review", "speed_probe": "execute", "executed": "execute"}
#: composing modules: they put the stages together (or present them) and may import anything
COMPOSING = {"pipeline", "engines", "session", "api", "cli", "check", "gradescope", "calibrate", "calibrate_keras2",
             "kit", "ci", "serve", "__main__"}
#: the bottom: records and helpers every stage may use; they import no stage and no composing module
BOTTOM = {"", "records", "errors", "textsafe", "untrusted", "logs", "versions"}

#: violations measured before issue 24's redesign and still to be fixed; the list may only shrink (the test fails
#: on a new violation and on a listed one that no longer exists)
KNOWN: set[str] = set()

MAX_FUNCTION_LINES = 80
MAX_DOCSTRING_LINES = 15


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``grader.execute.runner``; ``grader`` itself)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("grader",) + path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules, source: str | None = None) -> set[str]:
    """The package's modules ``name`` imports anywhere in its body (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:  # ``from grader import keras_io`` imports the module grader.keras_io
                found.add(f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin)
    return {m for m in found if m in modules and m != name}


def _node(module: str) -> str:
    """The node of the import graph a module belongs to: its stage, or its own name outside the stages."""
    parts = module.split(".")[1:]
    head = parts[0] if parts else ""
    if head in TOP_LEVEL_STAGE:
        return TOP_LEVEL_STAGE[head]
    return head


def _rank(node: str) -> int | None:
    for i, entry in enumerate(ORDER):
        if node == entry or (isinstance(entry, tuple) and node in entry):
            return i
    return None


def _graph() -> dict[str, dict[str, set[tuple[str, str]]]]:
    """node -> node -> the (module, imported module) pairs behind the arrow."""
    modules = _modules()
    graph: dict = {}
    for name, path in modules.items():
        src = _node(name)
        for target in _imports(name, path, modules):
            dst = _node(target)
            if dst != src:
                graph.setdefault(src, {}).setdefault(dst, set()).add((name, target))
    return graph


def _arrow_allowed(src: str, dst: str) -> bool:
    if src in COMPOSING:
        return True
    if src in BOTTOM:
        return dst in BOTTOM
    if dst in BOTTOM:
        return True
    if src in ONLY and dst not in ONLY[src]:
        return False
    rs, rd = _rank(src), _rank(dst)
    if rd is None:  # a composing module
        return False
    return rd < rs or (rd == rs and (src, dst) in SIBLING_ARROWS)


def _cycles(graph) -> list[list[str]]:
    """The strongly connected parts of more than one node (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def violations() -> dict[str, str]:
    """Each violation of the rules (``"a -> b"``, ``"cycle: a, b"``) with the imports behind it."""
    graph = _graph()
    found = {}
    for src, targets in graph.items():
        for dst, pairs in targets.items():
            if not _arrow_allowed(src, dst):
                found[f"{src} -> {dst}"] = ", ".join(f"{a} imports {b}" for a, b in sorted(pairs))
    for part in _cycles(graph):
        found["cycle: " + ", ".join(part)] = "; ".join(
            f"{a} -> {b}" for a in part for b in part if b in graph.get(a, {}))
    return found


def test_every_module_has_a_place_in_the_rules():
    known = set(COMPOSING) | BOTTOM | set(TOP_LEVEL_STAGE) | {s for e in ORDER for s in
                                                                   (e if isinstance(e, tuple) else (e,))}
    unplaced = sorted(m for m in _modules() if _node(m) not in known)
    assert not unplaced, f"modules the boundary rules do not place (add them to tests/test_boundaries.py): {unplaced}"


def test_stages_import_only_earlier_stages_and_form_no_cycle():
    found = violations()
    pending = {k: v for k, v in found.items() if k in KNOWN}
    if pending:
        print("known boundary violations still pending (issue 24):")
        for key, why in sorted(pending.items()):
            print(f"  {key}: {why}")
    new = {k: v for k, v in found.items() if k not in KNOWN}
    assert not new, "imports against the pipeline's direction:\n" + "\n".join(f"  {k}: {v}" for k, v in new.items())
    gone = KNOWN - set(found)
    assert not gone, f"fixed, so take them out of KNOWN in tests/test_boundaries.py: {sorted(gone)}"


def test_the_rules_catch_a_backward_import_and_a_cycle():
    """The checker itself: a later stage imported by an earlier one, and a loop, are found."""
    assert not _arrow_allowed("execute", "harvest") and _arrow_allowed("harvest", "execute")
    assert not _arrow_allowed("store", "score") and _arrow_allowed("export", "report")
    assert not _arrow_allowed("report", "export") and not _arrow_allowed("errors", "spec")
    assert not _arrow_allowed("spec", "pipeline") and _arrow_allowed("pipeline", "report")
    assert _cycles({"a": {"b": set()}, "b": {"c": set()}, "c": {"a": set()}, "d": {"a": set()}}) == [["a", "b", "c"]]
    modules = {"grader.execute": None, "grader.harvest": None, "grader.keras_io": None, "grader": None}
    lazy = "from ..harvest import Capture\n\ndef f():\n    from .. import keras_io\n    import numpy\n"
    assert _imports("grader.execute", PACKAGE / "execute" / "__init__.py", modules, lazy) == {
        "grader.harvest", "grader.keras_io"}  # the lazy import inside a function too


def _long_functions() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return out


def _long_docstrings() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(), str(path)))
        if doc and len(doc.splitlines()) > MAX_DOCSTRING_LINES:
            out.append(f"{path.relative_to(PACKAGE.parent)} ({len(doc.splitlines())} lines)")
    return out


def test_no_function_runs_past_80_lines():
    long = _long_functions()
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n  " + "\n  ".join(long)


def test_no_module_docstring_runs_past_15_lines():
    long = _long_docstrings()
    assert not long, (f"module docstrings over {MAX_DOCSTRING_LINES} lines (the role in a few lines; the reasons "
                      "go to docs/design/<stage>.md):\n  " + "\n  ".join(long))


def test_one_writer_of_gradescopes_results_json():
    """Gradescope's results.json is built and written by ``grader.export`` alone (the export and
    ``grader gradescope run`` call it): no other module spells its schema."""
    writers = sorted(str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")
                     if '"stdout_visibility"' in path.read_text())
    assert writers == ["grader/export/__init__.py"], f"modules that build Gradescope's results.json: {writers}"
