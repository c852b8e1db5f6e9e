"""Execute: running a student's notebook (or `# %%` script) in the sandbox.

``execute_notebook`` copies the submission's own files (and the spec's support
files, such as the course's tools.py) into a fresh private work directory,
runs every cell in a sandboxed kernel on the spec's backend (JAX by default),
re-runs on TensorFlow when the JAX backend explains a failure, and hands back
an ``Execution``: the cell-by-cell record with explanations, and the models
harvested from it.  Use it as a context manager: the scratch folder (and the
models in it) is removed on exit.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..errors import NotebookUnreadable
from ..harvest import MAX_CAPTURES, Capture, identify_dataset, read_capture, saved_models
from ..intake.formats import SCRIPT
from . import diagnose
from .runner import NotebookRunner, RunResult
from .sandbox import Limits, Sandbox
from .scripts import script_to_notebook


@dataclass
class Execution:
    name: str
    run: RunResult
    captures: list[Capture]
    saved: list[Path]
    notes: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    scratch: Path | None = None
    work_dir: Path | None = None

    def summary(self) -> dict:
        cells = [c for c in self.run.cells if c.status != "skipped"]
        return {"name": self.name, "backend": self.run.backend, "sandboxed": self.run.sandboxed,
                "seconds": round(self.run.seconds, 1), "cells_run": len(cells),
                "cells_failed": sum(c.status != "ok" for c in self.run.cells),
                "kernel_restarts": self.run.kernel_restarts, "models_captured": len(self.captures),
                "notes": list(self.notes), "failures": list(self.failures)}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def read_notebook(path: Path, fmt: str):
    try:
        if fmt == SCRIPT:
            return script_to_notebook(path.read_text(encoding="utf-8", errors="replace"))
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        return nb
    except (OSError, ValueError, nbformat.ValidationError) as e:
        raise NotebookUnreadable(f"{path.name}: the notebook cannot be read ({str(e)[:200]}).",
                                 hint="Download it again from Jupyter/Colab (File > Download > .ipynb).") from None


def _excerpt(source: str, lines: int = 8) -> str:
    rows = source.splitlines()
    return "\n".join(rows[:lines]) + ("\n..." if len(rows) > lines else "")


def _run_once(assignment, nb_path: Path, fmt: str, files_root: Path | None, backend: str, progress, on_capture):
    settings = assignment.notebooks
    scratch = Path(tempfile.mkdtemp(prefix="grader-nb-"))
    work, runtime, capture = scratch / "work", scratch / "runtime", scratch / "capture"
    if files_root is not None:
        shutil.copytree(files_root, work, symlinks=False, ignore_dangling_symlinks=True,
                        ignore=shutil.ignore_patterns(".*", "__MACOSX"))
    else:
        work.mkdir(parents=True)
        shutil.copy2(nb_path, work / nb_path.name)
    for name, src in settings.support_files:
        if not (work / name).exists():
            shutil.copy2(assignment.root / src, work / name)
    before = {p.relative_to(work).as_posix(): p.stat().st_mtime for p in work.rglob("*") if p.is_file()}
    nb = read_notebook(nb_path, fmt)
    sandbox = Sandbox(work, runtime, Limits(memory_mb=settings.memory_mb, processes=settings.processes),
                      shared_dirs=(capture,))
    runner = NotebookRunner(nb, sandbox, backend=backend, cell_timeout=settings.cell_timeout_s,
                            notebook_timeout=settings.notebook_timeout_s, capture_dir=capture,
                            max_output_bytes=settings.max_output_kb * 1024, progress=progress,
                            on_capture=on_capture)
    run = runner.run()
    return scratch, work, capture, run, before, sandbox


def execute_notebook(assignment, nb_path: Path, fmt: str, files_root: Path | None = None,
                     progress=None, on_capture=None) -> Execution:
    """Run one notebook; raises ``NotebookUnreadable`` for a file that is no notebook.

    ``on_capture(capture)`` is called for each harvested model as soon as the cell that made it
    has finished, so that evaluation can run beside the rest of the notebook.
    """
    read_notebook(nb_path, fmt)  # fail early, before any scratch work, on an unreadable file
    backend = assignment.notebooks.backend
    captures: list[Capture] = []

    def harvest(meta_path: Path, cell: int):
        if len(captures) >= MAX_CAPTURES:
            return
        cap = read_capture(meta_path)
        if cap is None:
            return
        cap.cell = cap.cell or cell
        cap.dataset = identify_dataset(assignment, cap.x, cap.y)
        captures.append(cap)
        if on_capture:
            on_capture(cap)

    scratch, work, capture, run, before, sandbox = _run_once(assignment, nb_path, fmt, files_root, backend,
                                                             progress, harvest)
    notes = []
    if not sandbox.available:
        notes.append(sandbox.warning)
    reason = diagnose.backend_explains(run.cells) if backend == "jax" else None
    if reason:
        captures.clear()
        if on_capture:
            on_capture(None)  # forget what the failed run gave (before its files go)
        shutil.rmtree(scratch, ignore_errors=True)
        scratch, work, capture, run, before, sandbox = _run_once(assignment, nb_path, fmt, files_root,
                                                                 "tensorflow", progress, harvest)
        notes.append(f"The notebook failed on the grader's fast JAX backend ({reason}), so it was run again on "
                     "the TensorFlow backend; the results below are from that run.")
    if run.notebook_timed_out:
        notes.append(f"The notebook ran over its {assignment.notebooks.notebook_timeout_s:.0f} s limit; the cells "
                     "after that point were not run.")
    failures = []
    for cell in run.cells:
        if cell.status == "ok":
            continue
        failures.append({"cell": cell.index + 1, "status": cell.status, "error": cell.error_name,
                         "explanation": diagnose.explain(cell, memory_mb=assignment.notebooks.memory_mb,
                                                         cell_limit=assignment.notebooks.cell_timeout_s,
                                                         memory_exhausted=run.memory_exhausted),
                         "traceback": cell.traceback[-2000:], "source": _excerpt(cell.source)})
    return Execution(nb_path.name, run, captures, saved_models(work, before), notes, failures, scratch, work)
