"""Execute: running a student's notebook (or `# %%` script) in the sandbox.

``execute_notebook`` stages the submission into a fresh private work folder
(copied inside the sandbox, by the sandbox user: links never followed, sizes
bounded), adds the spec's support files (such as the course's tools.py),
runs every cell in a sandboxed kernel on the spec's backend (JAX by default)
with seeds derived from the grading secret and the submission, re-runs on
TensorFlow when the JAX backend explains a failure, and hands back an
``Execution``: the cell-by-cell record with explanations, and the models
harvested from it -- copies the grader took, never paths into the sandbox.
Use it as a context manager: the scratch folder is removed on exit (and is
removed on every failure on the way).
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .. import executed, untrusted
from ..errors import NotebookUnreadable
from ..intake import formats
from ..intake.formats import MAX_NOTEBOOK_BYTES, SCRIPT, parse_json
from . import diagnose, keras2
from .limits import BatchLimits, StudentClock, TimeLimits, default_limits, secs, trains_on_datasets
from .runner import IOPUB_GRACE_S, MAX_KERNEL_MESSAGE_BYTES, CellRun, NotebookRunner, RunResult
from .relay import socket_tempdir
from . import compile_cache, course_kernel
from .sandbox import COLAB_HOME, HOME, Limits, Sandbox, SandboxFailed, unavailable_reason
from .scripts import script_to_notebook


@dataclass
class Execution:
    name: str
    run: RunResult
    captures: list  # ``harvest.Capture``s, taken by the run's harvester
    saved: list[tuple[str, Path]]  # (path in the work folder, the grader's copy)
    notes: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    scratch: Path | None = None
    limits: TimeLimits | None = None  # the time limits the (last) run had
    keras: str = "3"  # the Keras the (last) run had: "2" on the Keras 2 path (``keras2``)
    executed: dict | None = None  # the notebook as it ran, cells and outputs, bounded and sanitised (``executed``)

    def summary(self) -> dict:
        cells = [c for c in self.run.cells if c.status != "skipped"]
        return {"name": self.name, "backend": self.run.backend, "sandboxed": self.run.sandboxed,
                "sandbox_mode": self.run.sandbox_mode,
                "seconds": round(self.run.seconds, 1), "cells_run": len(cells),
                "cells_failed": sum(c.status != "ok" for c in self.run.cells),
                "kernel_restarts": self.run.kernel_restarts, "models_captured": len(self.captures),
                "training": self.training(), "notes": list(self.notes), "failures": list(self.failures),
                "limits": self.limits.to_json() if self.limits else None, "keras": self.keras}

    def training(self) -> dict:
        """How the captured fits trained, as the kernel said (forgeable: a count for the TA, never a grade):
        fused into compiled programs, or by Keras' own fit, and why (``fused_fit``)."""
        fits = [c.settings for c in self.captures if c.event == "fit"]
        fallbacks: dict[str, int] = {}
        programs: dict[str, int] = {}  # where each fused fit's compiled program came from
        for s in fits:
            if s.get("fused") is False:
                why = s.get("fused_fallback") or "unknown"
                fallbacks[why] = fallbacks.get(why, 0) + 1
            elif s.get("fused_program") in ("compiled", "disk", "stored", "memory"):
                programs[s["fused_program"]] = programs.get(s["fused_program"], 0) + 1
        return {"fits": len(fits), "fused": sum(s.get("fused") is True for s in fits),
                "fallbacks": dict(sorted(fallbacks.items(), key=lambda kv: -kv[1])[:10]), "programs": programs}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.scratch is not None:
            _remove(self.scratch)


def _remove(folder: Path) -> None:
    """Remove a scratch folder whatever the sandbox left in it (folders it made unreadable or read-only
    included), never changing anything a link in it points to."""
    def unlock(func, path, _exc):
        # what stops a removal is a folder's mode: the folder that holds ``path``, or ``path`` itself when
        # it is a folder that cannot be listed.  Only folders are unlocked, and never through a link.
        _unlock_folder(os.path.dirname(path))
        if func in (os.open, os.scandir, os.listdir) and _unlock_folder(path):
            shutil.rmtree(path, onerror=unlock)  # its content, now that it can be listed (once: it is unlocked)
        elif func in (os.unlink, os.remove, os.rmdir):
            try:
                func(path)
            except OSError:
                pass
    shutil.rmtree(folder, onerror=unlock)


def _unlock_folder(path) -> bool:
    """Give the grader full rights on ``path`` if it is a folder the grader owns and lacks them (never following
    a link: the mode is changed through ``/proc/self/fd`` of a descriptor of the folder itself).  True when
    the mode was changed."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or mode & 0o700 == 0o700:
            return False
        os.chmod(f"/proc/self/fd/{fd}", mode | 0o700)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def read_notebook(file) -> nbformat.NotebookNode:
    """The notebook of a submitted notebook or script (``intake.SubmittedFile``), read as untrusted bytes."""
    try:
        data = file.read(MAX_NOTEBOOK_BYTES)
        if file.format == SCRIPT:
            return script_to_notebook(data.decode("utf-8", errors="replace"))
        return formats.read_notebook_bytes(data)  # as leniently as Jupyter: a kernelspec's slip is no failure
    except untrusted.Refused as e:
        raise NotebookUnreadable(f"{file.relative}: the notebook cannot be read ({e}).") from None
    except Exception as e:  # any parser meeting hostile bytes: this file's problem only
        raise NotebookUnreadable(f"{file.relative}: the notebook cannot be read ({type(e).__name__}: "
                                 f"{str(e)[:160]}).",
                                 hint="Download it again from Jupyter/Colab (File > Download > .ipynb).") from None


#: the longest line of a failing cell quoted in its failure (``_excerpt``)
MAX_EXCERPT_LINE = 300


def _excerpt(source: str, traceback: str = "", context: int = 3) -> str:
    """The failing line of a cell with a few lines around it (marked ``->``), from the traceback's
    ``Cell In[n], line k``; the cell's first lines when the traceback does not say.  Each line is cut at
    ``MAX_EXCERPT_LINE`` characters: a cell's one line of megabytes was repeated in the student's results whole."""
    rows = [row if len(row) <= MAX_EXCERPT_LINE else row[:MAX_EXCERPT_LINE] + " ..." for row in source.splitlines()]
    found = re.findall(r"Cell In\[\d+\], line (\d+)", traceback)
    if not found or not 1 <= int(found[-1]) <= len(rows):
        return "\n".join(rows[:2 * context + 2]) + ("\n..." if len(rows) > 2 * context + 2 else "")
    at = int(found[-1]) - 1
    lo, hi = max(0, at - context), min(len(rows), at + context + 1)
    shown = [f"{'->' if i == at else '  '} {i + 1:>3} {rows[i]}" for i in range(lo, hi)]
    return "\n".join((["   ..."] if lo else []) + shown + (["   ..."] if hi < len(rows) else []))


def _kernel_records(capture: Path) -> tuple[list[str], dict]:
    """What the kernel's ``course_kernel`` recorded (untrusted, bounded): the names ``files.download`` was given,
    and which ``tools.py`` ran (``{"module", "own", "added", "failed"}``)."""
    downloads, support = [], {}
    try:
        dir_fd = untrusted.open_tree(capture)
    except OSError:
        return downloads, support
    try:
        try:
            for line in untrusted.read_bytes(course_kernel.DOWNLOADS, 64 * 1024, dir_fd).decode(
                    "utf-8", "replace").splitlines()[:course_kernel.MAX_RECORDS]:
                name = parse_json(line.encode())
                if isinstance(name, str) and name and name not in downloads:
                    downloads.append(name[:300])
        except (untrusted.Refused, ValueError, OSError):
            pass
        try:
            record = parse_json(untrusted.read_bytes(course_kernel.SUPPORT, 64 * 1024, dir_fd))
            if isinstance(record, dict):  # each field of the type the notes read, or left out
                support = {key: record[key] for key, kind in (("module", str), ("own", bool), ("added", list),
                                                              ("failed", str))
                           if isinstance(record.get(key), kind)}
        except (untrusted.Refused, ValueError, OSError):
            pass
    finally:
        os.close(dir_fd)
    return downloads, support


def _course_notes(assignment, nb, capture: Path, saved: list[tuple[str, Path]], before: dict,
                  model_suffixes: tuple) -> list[str]:
    """The report's words on what the grader did for Colab and the course's files: the Colab lines skipped (read
    from the notebook itself), the files ``files.download`` handed in, and which ``tools.py`` ran."""
    notes = []
    skipped = [f"cell {i + 1} `{line[:80]}`" for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
               for line in course_kernel.skipped_lines(cell.source)]
    if skipped:
        missing = _not_installed(nb)
        notes.append(f"Colab lines skipped: {', '.join(skipped[:8])}{' ...' if len(skipped) > 8 else ''}. The grader "
                     "has no network and its Python packages (TensorFlow, Keras) are installed already, so these "
                     "lines were not run; " + (
                         "nothing to change for grading." if not missing else
                         f"but {', '.join(missing)}, which your notebook installs and imports, is not one of them: "
                         "the cells that import it failed here. Hand in work that runs without it (for a plotting "
                         "callback such as livelossplot's, plot history.history after the fit instead)."))
    if any(re.search(r"\bdrive\.mount\s*\(", c.source) for c in nb.cells if c.cell_type == "code"):
        notes.append("drive.mount(): the grader has no Google Drive, so /content/drive/MyDrive was an empty folder "
                     "of the run: what the notebook saved there was kept (a model saved there is graded); a file it "
                     "reads from there must be handed in beside the notebook and opened by name.")
    downloads, support = _kernel_records(capture)
    taken = {rel for rel, _ in saved}
    for name in downloads[:10]:
        rel = os.path.normpath(name)
        for home in (COLAB_HOME, HOME):  # an absolute path in the work folder (Colab's /content is a link to it)
            rel = rel[len(home) + 1:] if rel.startswith(home + "/") else rel
        if rel in taken:
            notes.append(f"files.download({name!r}): the grader took {rel} from the notebook's run as a file you "
                         "hand in (in Colab this downloads it).")
        elif rel in before and rel.lower().endswith(model_suffixes):
            notes.append(f"files.download({name!r}): {rel} is graded as the file you handed in (the notebook's run "
                         "did not change it).")
        else:
            notes.append(f"files.download({name!r}): noted, but the grader only grades model files the notebook "
                         "saved in its own folder (model.save('model.h5')).")
    modules = {name[:-3]: name for name, _ in assignment.notebooks.support_files if name.endswith(".py")}
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    module = support.get("module")
    if module in modules and support.get("own") is True:
        added = [a for a in support.get("added", []) if isinstance(a, str) and a.isidentifier() and len(a) <= 60][:20]
        failed = support.get("failed")
        if isinstance(failed, str):
            notes.append(f"Your {modules[module]} failed when it was imported ({failed[:200]}), so the course's "
                         f"{modules[module]} (the grader's copy) was used instead.")
        elif added:
            notes.append(f"Your own {modules[module]} was used; the grader added what it lacks from the course's "
                         f"{modules[module]}: {', '.join(added)}.")
        else:
            notes.append(f"Your own {modules[module]} was used.")
    else:
        imported = formats.imported_modules("\n".join(line for line in code.splitlines()
                                                      if not line.lstrip().startswith(("!", "%"))))
        for name in sorted(set(modules) & imported):
            if not isinstance(support.get("module"), str):
                notes.append(f"Your code imports {name}: the grader gave it the course's {modules[name]} (you "
                             "handed in none).")
    return notes


def _not_installed(nb) -> list[str]:
    """The packages the notebook's skipped ``pip install`` lines name and its code imports that the grader's
    environment lacks (``livelossplot``), as the student wrote them."""
    import importlib.util

    named = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for line in course_kernel.skipped_lines(cell.source):
            words = re.split(r"[\s'\"(),]+", line)
            if "install" in words:  # the names, without their versions (livelossplot==0.5.5) or options (-q)
                named += [m.group() for w in words[words.index("install") + 1:]
                          if (m := re.match(r"[A-Za-z][\w.-]{0,60}", w))]
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    imported = formats.imported_modules("\n".join(line for line in code.splitlines()
                                                  if not line.lstrip().startswith(("!", "%"))))
    missing = []
    for name in dict.fromkeys(named):
        module = name.replace("-", "_")  # a top-level name only: find_spec imports the parents of a dotted one
        if module.isidentifier() and module in imported and importlib.util.find_spec(module) is None:
            missing.append(f"`{name}`")
    return missing[:5]


def _limits(settings) -> Limits:
    return Limits(memory_mb=settings.memory_mb, processes=settings.processes, tmp_mb=settings.tmp_mb,
                  disk_mb=settings.disk_mb, max_files_written=settings.max_files_written)


def _scratch_folder() -> Path:
    """A new scratch folder for one run, where the kernel's unix sockets (``runtime/kernel-N``) fit a socket's
    path (``relay.socket_tempdir``)."""
    return Path(tempfile.mkdtemp(prefix="grader-nb-", dir=socket_tempdir()))


@dataclass
class _Run:
    """One run of a notebook: its folders (``taken``: the harvested models; ``scratch``: the work folder's), the
    kernel's record, what was staged and what the work folder held before."""
    taken: Path
    scratch: Path
    work: Path
    result: RunResult
    staged: object
    before: dict
    sandbox: Sandbox
    bounds: untrusted.Bounds
    executed: dict  # this run's cells and outputs (``executed.keep``), taken before another run
    limits: TimeLimits

    def remove(self) -> None:
        _remove(self.scratch)
        _remove(self.taken)


def _stage_support_files(assignment, work: Path, sandbox: Sandbox) -> dict:
    """Copy the course's support files into the work folder, unless the student brought their own; the modules
    the student brought (module -> the course's file, to complete theirs)."""
    standins = {}
    for name, src in assignment.notebooks.support_files:  # trusted course files
        target = work / name
        if not os.path.lexists(target):
            shutil.copyfile(assignment.root / src, target)
            if sandbox.owner_uid is not None:
                os.chown(target, sandbox.owner_uid, sandbox.owner_uid, follow_symlinks=False)
        elif name.endswith(".py") and "/" not in name:
            standins[name[:-3]] = assignment.root / src
    return standins


def _run_once(assignment, nb, file, files_root: Path | None, backend: str, progress, harvester, seed,
              limits: TimeLimits, unsandboxed: bool = False):
    """One run in a new scratch folder: (scratch, work folder, run, stage report, files before the run)."""
    settings = assignment.notebooks
    keras2_path = backend == keras2.KERAS2  # the Keras 2 path: tf_keras on TensorFlow
    backend = "tensorflow" if keras2_path else backend
    scratch = _scratch_folder()
    try:
        work, runtime, capture = scratch / "work", scratch / "runtime", scratch / "capture"
        # the compile cache (``compile_cache``), read-only and only into a real sandbox: where there is
        # none, the code could write to it
        cache = compile_cache.ready(assignment) if compile_cache.read_by_kernels(assignment, backend) else None
        sandbox = Sandbox(work, runtime, _limits(settings), shared_dirs=(capture,),
                          readonly_dirs=((cache, compile_cache.INNER),) if cache else ())
        if not sandbox.available and not unsandboxed:  # never student code unisolated unless the TA said so
            raise SandboxFailed(unavailable_reason() or "isolation is not available")
        bounds = untrusted.Bounds(max_entries=assignment.intake.max_files,
                                  max_bytes=assignment.intake.max_megabytes * 2**20,
                                  max_depth=assignment.intake.max_depth)
        if files_root is not None:
            staged = sandbox.stage(files_root, single_file=False, bounds=bounds)
        else:
            staged = sandbox.stage(file.path, single_file=True, bounds=bounds)
        standins = _stage_support_files(assignment, work, sandbox)
        before = harvester.snapshot(work, bounds)
        _clear_outputs(nb)
        runner = NotebookRunner(nb, sandbox, backend=backend, keras2=keras2_path, cell_timeout=limits.cell.seconds,
                                notebook_timeout=limits.notebook.seconds, capture_dir=capture,
                                max_output_bytes=settings.max_output_kb * 1024, progress=progress,
                                on_capture=harvester.capture, seed=seed, fused=compile_cache.enabled(),
                                jax_cache=compile_cache.INNER if cache else None, standins=standins)
        run = runner.run()
        return scratch, work, run, staged, before, sandbox, bounds, executed.keep(file.relative, nb, run)
    except BaseException:
        _remove(scratch)
        raise


def _clear_outputs(nb) -> None:
    """Remove the outputs saved in ``nb``'s code cells before a run: a cell the run does not execute (blank, tagged
    ``grader-skip``, past a timeout) keeps them, and they are the author's (forged, or another run's), not this
    run's; the work kept as it ran shows only what this run made."""
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None


def _start_run(assignment, nb, file, files_root, backend: str, run_limits: TimeLimits, progress, harvester, seed,
               unsandboxed: bool, clock) -> _Run:
    """One run in new folders (``_run_once``), its models taken by ``harvester``; a sandbox that could not be
    prepared is ``KernelStartFailed``."""
    taken = Path(tempfile.mkdtemp(prefix="grader-taken-"))
    harvester.start(taken)
    harvester.keras = "2" if backend == keras2.KERAS2 else "3"  # its models are judged as this path's
    run_limits = clock.cap(run_limits) if clock is not None else run_limits
    try:
        return _Run(taken, *_run_once(assignment, nb, file, files_root, backend, progress, harvester, seed,
                                      run_limits, unsandboxed), limits=run_limits)
    except SandboxFailed as e:
        _remove(taken)
        raise _not_started(e) from None
    except BaseException:
        _remove(taken)
        raise


def _not_started(e: SandboxFailed):
    """The student's error for a sandbox that could not be prepared (the grader's environment, not their code)."""
    from ..errors import KernelStartFailed

    return KernelStartFailed(f"the sandbox could not be prepared: {e}", hint="This is the grader's environment "
                             "failing, not your code; a TA should re-run the grading.")


def _current_keras_limits(limits: BatchLimits, nb):
    """How to find the limits of a run of ``nb`` on current Keras, given its backend: a notebook that makes
    ``tf.data`` pipelines runs Keras' own loop over them, and gets the limits that allow for it
    (``BatchLimits.for_datasets``); any other, its backend's."""
    if trains_on_datasets(c.source for c in nb.cells if c.cell_type == "code"):
        return limits.for_datasets
    return limits.for_backend


def execute_notebook(assignment, file, files_root: Path | None = None, progress=None, *, harvester,
                     seed: int | None = None, limits: BatchLimits | None = None, unsandboxed: bool = False,
                     clock: StudentClock | None = None) -> Execution:
    """Run one notebook or script (an ``intake.SubmittedFile``); raises ``NotebookUnreadable`` for a file
    that is no notebook and ``KernelStartFailed`` when the sandbox cannot start a kernel.

    ``files_root``: the student's folder, staged whole beside the notebook (None: the file alone).
    ``harvester`` (``harvest.Harvester``, made by the caller that composes the stages) takes each model the
    kernel's hook wrote as soon as its cell has finished, so that evaluation can run beside the rest of the
    notebook, and the models the run saved.
    ``seed``: seeds the kernel (Python, NumPy, Keras) before the first cell.
    ``limits``: the batch's time limits (``limits.batch_limits``); None: this process's own
    (``limits.default_limits``, which runs the speed probe once).
    ``unsandboxed``: run even where the machine cannot isolate the code (otherwise ``KernelStartFailed``).
    ``clock``: the student's time budget (``limits.StudentClock``): each run's notebook limit is at most what
    is left of it.  A re-run on TensorFlow gets the limits of a run on TensorFlow (``BatchLimits.for_rerun``);
    a run on Keras 2 gets the reference's times the loop factor (``for_keras2``)."""
    nb = read_notebook(file)  # fail early, before any scratch work, on an unreadable file
    backend = assignment.notebooks.backend
    limits = limits or default_limits(assignment)
    if clock is not None and clock.left() < 1:
        return _not_started_for_time(assignment, nb, file, clock, limits.for_backend(backend))

    def start(backend_name: str, run_limits: TimeLimits) -> _Run:
        return _start_run(assignment, nb, file, files_root, backend_name, run_limits, progress, harvester, seed,
                          unsandboxed, clock)

    code = keras2.scan(nb)  # code written for Keras 2 runs on Keras 2 from the start
    own_limits = _current_keras_limits(limits, nb)
    first = keras2.KERAS2 if code else backend
    done = start(first, limits.for_keras2(backend) if code else own_limits(backend))
    notes = [] if done.sandbox.available else [done.sandbox.warning]
    reason = diagnose.backend_explains(done.result.cells) if first == "jax" else None
    if not code and (why := keras2.explains(done.result.cells)):  # Keras 2 code the scan missed: re-run on Keras 2
        code, reason = keras2.Keras2Code(reason=why), None
    second = None  # the scan chose Keras 2 and cells failed there: run again on current Keras, the better kept
    if reason or (code and first != keras2.KERAS2):
        harvester.discard()  # forget what the failed run gave (before its files go)
        done.remove()
        done = start(keras2.KERAS2 if code else "tensorflow",
                     limits.for_keras2(backend) if code else limits.for_rerun("tensorflow", backend))
        if reason:
            notes.append(f"The notebook failed on the grader's fast JAX backend ({reason}), so it was run again on "
                         "the TensorFlow backend; the results below are from that run.")
    elif code.signs and keras2.failed(done.result.cells) and (clock is None or clock.left() >= 1):
        # (a run on current Keras that the spent budget would give no time is not started)
        kept = harvester.aside()
        try:
            other = start(backend, own_limits(backend))
        except BaseException:
            harvester.restore(kept)
            done.remove()
            raise
        better = keras2.keras3_did_better(done.result.cells, len(kept[0]), other.result.cells,
                                          len(harvester.captures))
        second = keras2.second_run_note(code, file.relative, done.result.cells, other.result.cells, better)
        if better:
            done.remove()
            done, code = other, None
        else:
            harvester.restore(kept)
            other.remove()
    if code:
        notes.append(keras2.note(code, file.relative))
    if second:
        notes.append(second)
    try:
        saved = harvester.saved(done.work, done.before, done.bounds)
        notes.extend(_course_notes(assignment, nb, done.scratch / "capture", saved, done.before, harvester.suffixes))
        if not harvester.captures and not saved and (graph := keras2.graph_mode_note(nb, file.relative)):
            notes.append(graph)
    finally:
        _remove(done.scratch)  # the work folder is no longer needed: every model in it was taken
    notes.extend(_run_notes(done, harvester.refused))
    return Execution(file.relative, done.result, harvester.captures, saved, notes,
                     _failures(assignment, done.result, done.limits), done.taken, limits=done.limits,
                     keras="2" if code else "3", executed=done.executed)


def _not_started_for_time(assignment, nb, file, clock: StudentClock, limits: TimeLimits) -> Execution:
    """A notebook met once the student's whole time is spent: every code cell skipped, and neither files staged
    nor a kernel started (a student's hundreds of scripts would each have cost a sandbox and a kernel's start
    past the budget)."""
    used = clock.cap(limits)
    result = RunResult(backend=limits.backend, notebook_timed_out=True)
    result.cells = [CellRun(index, cell.source, "skipped", "NotebookTimeout",
                            f"the notebook ran over its {used.notebook.seconds:.0f} s limit")
                    for index, cell in enumerate(nb.cells) if cell.cell_type == "code" and cell.source.strip()]
    note = (f"{file.relative} was not run: {clock.why} ({secs(clock.total_s)} s) was used up before it (no time "
            "was left to start it).")
    return Execution(file.relative, result, [], [], [note], _failures(assignment, result, used), limits=used)


def _run_notes(done: _Run, refused: list[str]) -> list[str]:
    """The report's words on the run: files not staged, models not taken, messages dropped, a notebook timeout."""
    notes = [f"{rel}: {why}; it was not given to the notebook." for rel, why, special in done.staged.skipped
             if not special]  # links and special files are named by intake already
    notes.extend(refused)
    for cell, count in sorted(done.result.dropped_messages.items()):
        notes.append(f"{f'Cell {cell}' if cell else 'Before the first cell, the kernel'} sent {count} message(s) "
                     f"larger than the grader takes from a notebook ({MAX_KERNEL_MESSAGE_BYTES // 2**20} MB: text, a "
                     "plot or a display); they were dropped. Print or show less at once (a plot's figure size, a "
                     "summary instead of a whole array).")
    cut = [str(cell.index + 1) for cell in done.result.cells if cell.output_cut]
    if cut:
        cut = cut[:20] + (["..."] if len(cut) > 20 else [])
        notes.append(f"The output of cell(s) {', '.join(cut)} was still arriving {IOPUB_GRACE_S} s after the cell "
                     "finished; the rest of it is not shown in your work as it ran (grading uses your models, not "
                     "what was printed).")
    failed = [cell.index + 1 for cell in done.result.cells if cell.status != "ok"]
    if len(failed) > MAX_LISTED_FAILURES:
        notes.append(f"{len(failed)} cells failed or were not run; the first {MAX_LISTED_FAILURES} are listed, and "
                     f"cells {failed[MAX_LISTED_FAILURES]} to {failed[-1]} are not.")
    if done.result.notebook_timed_out:
        notes.append(f"The notebook ran over its time limit of {secs(done.limits.notebook.seconds)} s "
                     f"({done.limits.notebook.why}); the cells after that point were not run.")
    return notes


#: the failed (or not run) cells of one run listed, each with its explanation, traceback and lines; the rest are
#: counted in a note (``_run_notes``): thousands of failing one-line cells made a student's results tens of MB
MAX_LISTED_FAILURES = 50


def _failures(assignment, result: RunResult, used: TimeLimits) -> list[dict]:
    """Each failed cell: where, what, the explanation in plain words, a short traceback and the failing lines (the
    first ``MAX_LISTED_FAILURES``)."""
    failed = [cell for cell in result.cells if cell.status != "ok"][:MAX_LISTED_FAILURES]
    return [{"cell": cell.index + 1, "status": cell.status, "error": cell.error_name,
             "explanation": diagnose.explain(cell, memory_mb=assignment.notebooks.memory_mb,
                                             memory_exhausted=result.memory_exhausted, limits=used),
             "traceback": cell.traceback[-2000:], "source": _excerpt(cell.source, cell.traceback)}
            for cell in failed]
