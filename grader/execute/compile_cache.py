"""The compiled programs the notebooks' kernels reuse: a JAX persistent compilation cache.

``build`` compiles the reference solution's fused-fit and ``predict`` programs once per machine and software
version, at the start of a batch, in a clean process, into a folder the grader owns (``cache_dir``, keyed by
everything that changes a program); every sandbox binds it read-only at ``INNER``.  It also holds
matplotlib's font list.  ``prune`` removes folders no batch used for ``UNUSED_DAYS``.
Why read-only, and what the keys hold: docs/design/execute.md.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .fused_fit import FONT_LIST_DIR

log = logging.getLogger("grader")

#: where the kernel sees the cache folder (bound read-only by the sandbox)
INNER = "/grader-jax-cache"
#: the kernel's environment that decides how XLA compiles (the runner sets it; the builder copies it)
KERNEL_XLA_ENV = {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu", "OMP_NUM_THREADS": "1",
                  "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
BUILD_TIMEOUT_S = 900.0
MANIFEST = "manifest.json"
BUILD_LOCK = ".build.lock"  # in the folder of cache folders (``_one_builder``)
#: a cache folder no batch has used for this long is removed when another one is built (a batch that needs it
#: again builds it again); a build left half-done (a killed grader) is removed after a day
UNUSED_DAYS = 30
FUSED_SOURCE = Path(__file__).with_name("fused_fit.py")


def turned_off(variable: str) -> bool:
    """Whether the TA turned a setting of the kernels off: ``variable`` is 0, off, no or false."""
    return os.environ.get(variable, "1").strip().lower() in ("0", "off", "no", "false")


def defer_tensorflow() -> bool:
    """In one of the grader's own processes that train on JAX (this cache's builder, calibration's training
    processes, the re-training worker): TensorFlow imported when it is first used, as in the kernels
    (``deferred_tf``), unless ``GRADER_DEFERRED_TF`` is turned off.  Keras asks TensorFlow's classes when it
    serialises a model or imports a reference that imports it: about 3 s of each such process's start, and
    0.8 GB of libraries read, for nothing.  Call it before Keras is imported; returns whether it is in place."""
    if turned_off("GRADER_DEFERRED_TF"):
        return False
    from . import deferred_tf

    return deferred_tf.install()


def enabled() -> bool:
    """False when the TA turned fused training off (``GRADER_FUSED=0``): notebooks train with Keras' own fit."""
    return not turned_off("GRADER_FUSED")


def cache_enabled() -> bool:
    """False when fused training is off, or runs without this cache (``GRADER_FUSED=nocache``: every kernel
    compiles its own programs)."""
    return enabled() and os.environ.get("GRADER_FUSED", "1").strip().lower() != "nocache"


def base_dir() -> Path:
    """Where cache folders live: ``$GRADER_CACHE_DIR``, else ``$XDG_CACHE_HOME/grader`` or ``~/.cache/grader``."""
    if os.environ.get("GRADER_CACHE_DIR"):
        return Path(os.environ["GRADER_CACHE_DIR"]) / "jax"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "grader" / "jax"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _processor() -> str:
    """The processor's model and features (the compiled code's target)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    wanted = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "flags", "Features", "CPU implementer", "CPU part") and key not in wanted:
            wanted[key] = value.strip()
    return json.dumps([platform.machine(), sorted(wanted.items())])


def cache_key(assignment) -> str:
    h = hashlib.sha256()
    parts = {"jax": _version("jax"), "jaxlib": _version("jaxlib"), "keras": _version("keras"),
             "matplotlib": _version("matplotlib"),
             "python": sys.version, "env": KERNEL_XLA_ENV, "processor": _processor()}
    h.update(json.dumps(parts, sort_keys=True).encode())
    h.update(FUSED_SOURCE.read_bytes())
    h.update(Path(__file__).read_bytes())  # the builder: what it compiles into the folder
    # the reference's code (what it trains), not the spec: a threshold or time limit edited in assignment.toml
    # compiles nothing new.  (A stale folder is never wrong anyway: JAX keys every entry by its program.)
    root = Path(assignment.root)
    for path in sorted(root.glob("*.py")):
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def cache_dir(assignment) -> Path:
    return base_dir() / f"jax{_version('jax')}-{cache_key(assignment)[:24]}"


def ready(assignment) -> Path | None:
    """The assignment's cache folder, when it has been built (None otherwise, or when the cache is off)."""
    if not cache_enabled():
        return None
    try:
        folder = cache_dir(assignment)
        if not (folder / MANIFEST).is_file():
            return None
    except OSError:
        return None
    try:
        os.utime(folder / MANIFEST)  # when it was last used, for ``prune``
    except OSError:  # a cache another user built, or on a read-only disk: still the cache, only never pruned
        pass
    return folder


def prune(base: Path, keep: Path, *, now: float | None = None) -> list[Path]:
    """Remove the cache folders under ``base`` but ``keep`` that no batch has used (``ready``) for
    ``UNUSED_DAYS``, and builds left half-done for a day: every upgrade of JAX, Keras or the grader, and every
    edit of a reference solution, builds a new folder, and the old ones would otherwise stay for ever.
    Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        if path == keep or entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name.startswith(".building-"):
            stale = now - entry.stat(follow_symlinks=False).st_mtime > 86400
        elif entry.name.startswith("jax"):
            try:
                used = (path / MANIFEST).stat().st_mtime
            except OSError:  # no manifest: never completed
                used = entry.stat(follow_symlinks=False).st_mtime
            stale = now - used > UNUSED_DAYS * 86400
        else:
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("compile cache: removed %d folder(s) unused for %d days", len(removed), UNUSED_DAYS)
    return removed


def _fitted_tasks(assignment) -> list:
    return [t for t in assignment.model_tasks() if t.training == "fit" and t.reference]


def read_by_kernels(assignment, backend: str | None = None) -> bool:
    """Whether kernels of ``assignment`` on ``backend`` (default: the spec's) read a cache on this machine:
    on JAX, with the cache on, and in a real sandbox, the only place it is bound into read-only (in the
    ``dropped`` sandbox only where uid 65534 can reach it: not under /root)."""
    from .sandbox import isolation_mode, sandbox_user_reaches

    mode = isolation_mode()
    return ((backend or assignment.notebooks.backend) == "jax" and cache_enabled() and mode != "none"
            and (mode != "dropped" or sandbox_user_reaches(base_dir())))


def for_kernels(assignment) -> Path | None:
    """The folder this machine's kernels of ``assignment`` will read, built first if this machine has none:
    a batch builds it before its workers start, and a Dask worker on another machine with its first notebook.
    None where kernels read no cache (``read_by_kernels``)."""
    if not read_by_kernels(assignment):
        return None
    return ready(assignment) or build(assignment)


@contextlib.contextmanager
def _one_builder(base: Path):
    """Held while a folder is built: the graders and workers of one machine build a folder once, the others
    wait for it (each would otherwise compile the same programs beside the others).  Without a lock file (a
    read-only or foreign folder), builders are not kept apart: each builds aside, and the first rename stands."""
    try:
        fd = os.open(base / BUILD_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def build(assignment, *, timeout: float = BUILD_TIMEOUT_S) -> Path | None:
    """Compile the programs of the assignment's reference fits into its cache folder, unless built already;
    in a clean process with the kernel's environment, one builder per machine at a time (``_one_builder``).
    Returns the folder, or None when there is nothing to build or the build failed (then the kernels compile
    for themselves, and the log says why)."""
    if not cache_enabled() or not _fitted_tasks(assignment):
        return None
    final = cache_dir(assignment)
    if (final / MANIFEST).is_file():
        return final
    base = final.parent
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("no compile cache: %s cannot be created (%s)", base, e)
        return None
    with _one_builder(base):
        if (final / MANIFEST).is_file():  # built while this one waited
            return final
        return _build(assignment, final, timeout)


def _build(assignment, final: Path, timeout: float) -> Path | None:
    base = final.parent
    building = base / f".building-{uuid.uuid4().hex[:12]}"
    scratch = Path(tempfile.mkdtemp(prefix="grader-cache-home-"))
    try:
        building.mkdir()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(scratch),
               "KERAS_HOME": str(scratch / "keras"), "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
               "PYTHONDONTWRITEBYTECODE": "1", **KERNEL_XLA_ENV,
               # matplotlib (Keras imports it) writes its font list here, for every kernel to copy
               "MPLCONFIGDIR": str(building / FONT_LIST_DIR)}
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "grader.execute.compile_cache", str(assignment.root),
                               str(building)], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, cwd=str(scratch))
        if done.returncode != 0:
            log.warning("no compile cache: building it failed (exit code %s): %s", done.returncode,
                        done.stderr.decode("utf-8", "replace")[-2000:])
            return None
        report = json.loads(done.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
        report.update(seconds=round(time.monotonic() - t0, 1), key=cache_key(assignment),
                      jax=_version("jax"), jaxlib=_version("jaxlib"), keras=_version("keras"))
        (building / MANIFEST).write_text(json.dumps(report, indent=1))
        for dirpath, dirnames, filenames in os.walk(building):  # readable by the sandbox's user
            os.chmod(dirpath, 0o755)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o644)
        try:
            os.rename(building, final)
        except OSError:  # another grader built it meanwhile: theirs stands
            if not (final / MANIFEST).is_file():
                raise
        prune(base, final)
        return final
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as e:
        log.warning("no compile cache: %s: %s", type(e).__name__, e)
        return None
    finally:
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _main(root: str, out: str) -> None:
    """The builder (a clean process): every reference fit of the assignment, trained once through the fused
    fit with the cache at ``out`` writable, and every reference model's ``predict`` on its own data (the sheet
    plots each model's predictions: Keras compiles a program for the full batches and one for the last, a
    tenth of a second a model otherwise).  Prints what each task compiled, as JSON."""
    defer_tensorflow()  # as in the kernels, before anything imports Keras
    from ..spec import import_reference, load_assignment
    from . import fused_fit

    if not fused_fit.install(cache_dir=out, cache_writable=True):
        raise SystemExit("Keras is not importable")
    assignment = load_assignment(root, require_thresholds=False)
    fitted = {t.id for t in _fitted_tasks(assignment)}
    tasks = {}
    for task in assignment.model_tasks():
        if not task.reference:
            continue
        fused_fit.last_report.clear()
        made = import_reference(assignment, task.reference)(0)
        report = {k: fused_fit.last_report.get(k) for k in ("fused", "fused_fallback", "fused_program")} \
            if task.id in fitted else {}
        try:
            model, (x, _) = made
            model.predict(x, verbose=0)
            report["predict"] = True
        except Exception as e:  # a reference of another shape: its predictions compile in the kernels
            report["predict"] = f"{type(e).__name__}: {str(e)[:120]}"
        tasks[task.id] = report
    print(json.dumps({"tasks": tasks}))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
