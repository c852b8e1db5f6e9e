"""Running one notebook in the sandbox and keeping going through its failures.

``NotebookRunner.run()`` executes every code cell in a sandboxed kernel with
nbclient (``allow_errors``: a failing cell is recorded and the next one runs),
a per-cell time limit enforced twice -- nbclient's own timeout, and a
watchdog outside nbclient in case nbclient itself does not return -- a
per-notebook time limit, and a cap on the output kept per cell.  A cell that
runs into its limit is stopped by killing its kernel at the limit (an
interrupt cannot be trusted to stop student code, and the sandboxed kernel
is not the process jupyter_client signals), and the remaining cells run in a
new kernel, as after a kernel that dies (``os._exit``, out of memory,
killed).  Nothing the kernel prints is trusted: grades come from the
captured models, evaluated elsewhere.  Nor is its size: a kernel message
larger than ``MAX_KERNEL_MESSAGE_BYTES`` is dropped as it arrives, never held
(``BoundedKernelManager``, ``relay``), and the student is told which cell's.
"""
from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import zmq
from jupyter_core.utils import ensure_async
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from traitlets import Bool

from ..errors import KernelStartFailed
from .compile_cache import KERNEL_XLA_ENV, turned_off
from .kernel import SandboxedKernelManager, configure, kernel_folder
from .relay import Relay
from .sandbox import HOME, Sandbox

CAPTURE_HOOK = Path(__file__).with_name("capture_kernel.py")
FUSED_FIT = Path(__file__).with_name("fused_fit.py")
DEFERRED_TF = Path(__file__).with_name("deferred_tf.py")
KERAS2_KERNEL = Path(__file__).with_name("keras2_kernel.py")  # the Keras 2 path: tf_keras, Keras 2's names
COURSE_KERNEL = Path(__file__).with_name("course_kernel.py")  # Colab's module and magics, tools.py completed
# Runs at the kernel's start (exec_files): loads one of the grader's kernel-side modules from its file as a
# module of its own (nothing of it in the student's namespace) and runs ``call`` on it; a failure leaves the
# kernel as Python and Keras make it.
KERNEL_MODULE_LOADER = """def _grader_load(name={name!r}, path={path!r}):
    import importlib.util, os, sys
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
        module.{call}
    except Exception:
        pass


_grader_load()
del _grader_load
"""
# the fused fit, installed before the capture hook (which then wraps it), with the grader's compile cache
# (read-only) when the sandbox binds one
FUSED_CALL = 'install(cache_dir=os.environ.get("GRADER_JAX_CACHE") or None, font_list=True)'
WATCHDOG_GRACE_S = 10.0
#: how long after a cell's reply its output may still arrive (nbclient's ``iopub_timeout``).  nbclient's 4 s
#: dropped the last prints of a print-heavy cell on a busy machine; what is still cut after this is named
IOPUB_GRACE_S = 60
RESTART_TIMEOUT_S = 180.0  # a kernel restart, and the new kernel's first reply, each within this
DISK_POLL_S = 0.5  # how often the disk quota of a running cell is checked
#: the largest kernel message the grader takes, all its parts together (``relay.Relay``): a larger one is read
#: to its end and dropped.  A cell's output is cut at ``max_output_kb`` (64 KB) anyway; a 512 MB display
#: message, taken whole, took the grading process to 2 GB, and one of 300 parts of 1 MB to 657 MB.
MAX_KERNEL_MESSAGE_BYTES = 2**20
#: the output one notebook run keeps, all its cells together (each output counted as at least
#: ``MIN_OUTPUT_BYTES``): the per-cell cap alone let 54,000 cells of 64 KB each (a script of ``# %%`` lines, one
#: print each, 22 ms a cell within a Keras 2 run's 1,200 s) hold 3.5 GB in the grading process.  The work kept as
#: it ran holds 4 MB (``executed.MAX_NOTEBOOK_BYTES``), so nothing shown is lost.
MAX_NOTEBOOK_OUTPUT_BYTES = 8 * 2**20
MIN_OUTPUT_BYTES = 64


#: matplotlib's backend in the kernel: Jupyter's inline one, so a figure a cell draws (``plt.show()`` or not) is
#: one of its outputs, as the student saw it, and the kept work shows it (bounded and checked by ``executed``)
INLINE_PLOTS = "module://matplotlib_inline.backend_inline"


@dataclass
class CellRun:
    index: int
    source: str
    status: str  # "ok", "error", "timeout", "died", "quota", "skipped"
    error_name: str = ""
    error_value: str = ""
    traceback: str = ""
    seconds: float = 0.0
    limit_s: float = 0.0  # the time the cell was given
    limited_by: str = ""  # "cell": its own limit; "notebook": what was left of the notebook's
    stopped_s: float = 0.0  # a cell that timed out: when it was stopped (before the kernel's restart)
    output_cut: bool = False  # its output was still arriving ``IOPUB_GRACE_S`` after its reply: the rest dropped


@dataclass
class RunResult:
    cells: list[CellRun] = field(default_factory=list)
    backend: str = ""
    sandboxed: bool = True
    sandbox_mode: str = ""  # how the sandbox isolated the run (``sandbox.MODE_WORDS``: "root", "user", ...)
    notebook_timed_out: bool = False
    seconds: float = 0.0
    kernel_restarts: int = 0
    memory_exhausted: bool = False
    quota_exceeded: str | None = None  # why the run's files went past the disk quota, when they did
    capture_cells: dict = field(default_factory=dict)  # capture file name -> 1-based cell position
    # 1-based cell position (0: before the first cell) -> kernel messages dropped for their size (``relay``)
    dropped_messages: dict = field(default_factory=dict)


def _data_size(data) -> int:
    """The characters of a display's data (any JSON the kernel sent)."""
    return sum(len(str(v)) for v in data.values()) if isinstance(data, dict) else len(str(data or ""))


class CappedClient(NotebookClient):
    """nbclient's client with a cap on the output kept per cell (its characters, its outputs, a display's updates),
    no widget state kept, and a timed-out cell's output reader stopped."""

    max_output_bytes = 64 * 1024
    #: outputs a cell keeps whatever their size: 20,000 empty displays, each 0 bytes, were all held
    max_outputs = 2000
    #: nbclient keeps the state every ``jupyter.widget`` comm sends, unbounded; the grader shows no widget
    store_widget_state = Bool(False)
    #: the output the run has kept so far, all cells together (``MAX_NOTEBOOK_OUTPUT_BYTES``), and whether the
    #: line saying the rest was dropped has been written; set on the instance as the run goes
    grader_output_total = 0
    grader_notebook_full = False

    async def _async_poll_for_reply(self, msg_id, cell, timeout, task_poll_output_msg, task_poll_kernel_alive):
        # nbclient leaves a timed-out cell's output reader running (CellTimeoutError is a "control signal" to
        # it): that reader would take, and drop, the next cells' output from the shared channel
        try:
            reply = await super()._async_poll_for_reply(msg_id, cell, timeout, task_poll_output_msg,
                                                         task_poll_kernel_alive)
        except CellTimeoutError:
            task_poll_output_msg.cancel()
            raise
        # nbclient stops reading a cell's output ``iopub_timeout`` after its reply, with a log line only
        self.grader_output_cut = task_poll_output_msg.cancelled()
        return reply

    def output(self, outs, msg, display_id, cell_index):
        used_by_cell = self.__dict__.setdefault("grader_output_used", {})
        used = used_by_cell.get(cell_index, 0)
        if used > self.max_output_bytes:
            return None
        content = msg.get("content", {})
        size = len(str(content.get("text", ""))) + _data_size(content.get("data", {}))
        total = self.grader_output_total + max(size, MIN_OUTPUT_BYTES)
        if total > MAX_NOTEBOOK_OUTPUT_BYTES:  # the notebook's outputs together: nothing more is kept
            used_by_cell[cell_index] = self.max_output_bytes + 1
            if not self.grader_notebook_full:  # said once, in the cell that reached it
                self.grader_notebook_full = True
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=(
                    f"[grader: output beyond {MAX_NOTEBOOK_OUTPUT_BYTES >> 20} MB of this notebook, from here on, "
                    "was dropped]\n")))
            return None
        used_by_cell[cell_index] = used + size
        last = outs[-1] if outs else {}
        if (msg.get("msg_type") == "stream" and used + size <= self.max_output_bytes and display_id is None
                and last.get("output_type") == "stream" and last.get("name") == content.get("name")
                and isinstance(last.get("text"), str)):
            last["text"] += str(content.get("text", ""))  # one output, as Jupyter shows consecutive prints
            self.grader_output_total = total
            return None
        if used + size > self.max_output_bytes or len(outs) >= self.max_outputs:
            used_by_cell[cell_index] = self.max_output_bytes + 1
            outs.append(nbformat.v4.new_output("stream", name="stderr",
                                               text=f"[grader: output beyond {self.max_output_bytes // 1024} KB "
                                                    f"or {self.max_outputs} outputs of this cell was dropped]\n"))
            # the line itself is kept: counted, so that cells each past their own cap are bounded too
            self.grader_output_total = self.grader_output_total + 2 * MIN_OUTPUT_BYTES
            return None
        self.grader_output_total = total
        return super().output(outs, msg, display_id, cell_index)

    def _update_display_id(self, display_id, msg):
        # an update replaces a display's data wherever it is shown, uncounted: 40 updates of 500 KB were all held.
        # One that would take a cell past its cap is dropped (the display keeps what it showed).
        used_by_cell = self.__dict__.setdefault("grader_output_used", {})
        new = _data_size(msg.get("content", {}).get("data"))
        after = {}
        for cell_index, indices in self._display_id_map.get(display_id, {}).items():
            outputs = self.nb["cells"][cell_index]["outputs"]
            old = sum(_data_size(outputs[i].get("data")) for i in indices if i < len(outputs))
            after[cell_index] = used_by_cell.get(cell_index, 0) - old + new * len(indices)
            if after[cell_index] > self.max_output_bytes:
                return
        grown = sum(after[i] - used_by_cell.get(i, 0) for i in after)
        if self.grader_output_total + grown > MAX_NOTEBOOK_OUTPUT_BYTES:
            return  # updates that would take the notebook past its cap (thousands of tiny displays grown at once)
        self.grader_output_total = self.grader_output_total + grown
        used_by_cell.update(after)
        super()._update_display_id(display_id, msg)


class BoundedKernelManager(SandboxedKernelManager):
    """The sandboxed kernel's manager, whose clients receive every message through a ``relay.Relay``: a message
    larger than ``MAX_KERNEL_MESSAGE_BYTES`` is dropped as it arrives (``on_dropped(channel)`` is told), never
    held.  The manager's own sockets (its control channel) take ZMQ's cap on a message's parts."""

    on_dropped = None
    relay: Relay | None = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.context.setsockopt(zmq.MAXMSGSIZE, MAX_KERNEL_MESSAGE_BYTES)

    def client(self, **kwargs):
        kc = super().client(**kwargs)
        direct = kc._make_url  # the kernel's own sockets
        if self.relay is None:
            self.relay = Relay(lambda channel: direct(channel).removeprefix("ipc://"), MAX_KERNEL_MESSAGE_BYTES,
                               self._dropped)
        kc._make_url = self.relay.url  # before its channels connect
        return kc

    def _dropped(self, channel: str) -> None:
        if self.on_dropped is not None:
            self.on_dropped(channel)

    async def cleanup_resources(self, restart: bool = False) -> None:
        await super().cleanup_resources(restart=restart)
        if not restart and self.relay is not None:
            self.relay.close()
            self.relay = None


def _host_paths() -> list[tuple[str, str]]:
    """(host folder, what a student is shown instead), longest first: the Python installation and the
    sandbox's work folder never appear in a student's traceback."""
    import sys
    import sysconfig

    pairs = {sysconfig.get_paths()["purelib"]: "<site-packages>", sysconfig.get_paths()["stdlib"]: "<python>",
             os.path.realpath(sys.prefix): "<python>", os.path.realpath(sys.base_prefix): "<python>",
             HOME + "/": ""}
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def _short_traceback(lines: list[str], keep: int = 12) -> str:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(lines))
    for host, shown in _host_paths():
        text = text.replace(host, shown)
    rows = text.splitlines()
    return "\n".join(rows[-keep:]) if len(rows) > keep else text


class NotebookRunner:
    """Executes one notebook in a fresh sandboxed kernel."""

    def __init__(self, notebook, sandbox: Sandbox, *, backend: str = "jax", cell_timeout: float = 600,
                 notebook_timeout: float = 1800, capture_dir: Path | None = None,
                 max_output_bytes: int = 64 * 1024, progress=None, on_capture=None, seed: int | None = None,
                 keras2: bool = False, fused: bool = True, jax_cache: str | None = None, standins: dict[str, Path] | None = None):
        self.nb = notebook
        self.sandbox = sandbox
        self.backend = backend
        self.cell_timeout = cell_timeout
        self.notebook_timeout = notebook_timeout
        self.capture_dir = capture_dir
        self.max_output_bytes = max_output_bytes
        self.progress = progress
        self.on_capture = on_capture  # called with (capture file, cell position) as each appears
        self.seed = seed  # seeds Python, NumPy and Keras before the first cell (a student's own seed wins)
        self.fused = fused  # keras.Model.fit fused into compiled programs (``fused_fit``)
        self.jax_cache = jax_cache  # where the kernel reads the compile cache (bound read-only), if anywhere
        self.keras2 = keras2  # the Keras 2 path: tf_keras on TensorFlow (``keras2_kernel``, its own fused fit)
        # module name -> the grader's stand-in for a support module the student brought their own of (tools.py):
        # the kernel runs theirs and adds what it lacks from the stand-in (``course_kernel``)
        self.standins = dict(standins or {})

    def _env(self) -> dict[str, str]:
        env = {"HOME": self.sandbox.inner_work, "KERAS_BACKEND": self.backend, "MPLBACKEND": INLINE_PLOTS,
               "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "IPYTHONDIR": "/tmp/ipython",
               "MPLCONFIGDIR": "/tmp/matplotlib", "PYDEVD_DISABLE_FILE_VALIDATION": "1", **KERNEL_XLA_ENV}
        if not self.sandbox.available:
            env["IPYTHONDIR"] = str(self.sandbox.runtime_dir / "ipython")
            env["MPLCONFIGDIR"] = str(self.sandbox.runtime_dir / "matplotlib")
        if self.capture_dir is not None:
            env["GRADER_CAPTURE_DIR"] = str(self.capture_dir)
        if self.seed is not None:
            env["PYTHONHASHSEED"] = str(self.seed % 2**31)
        if self.fused and self.jax_cache:
            env["GRADER_JAX_CACHE"] = self.jax_cache
        if self.keras2:
            env.update(TF_USE_LEGACY_KERAS="1", GRADER_KERAS2="1")
        if self.standins:
            import json

            folder = kernel_folder(self.sandbox) / "standins"
            env["GRADER_SUPPORT_MODULES"] = json.dumps({name: str(folder / f"{name}.py") for name in self.standins})
        return env

    def _new_manager(self) -> SandboxedKernelManager:
        km = BoundedKernelManager()
        km.on_dropped = self._dropped
        configure(km, self.sandbox, self._env(), self._startup)
        return km

    def run(self) -> RunResult:
        return asyncio.run(self._run())

    async def _run(self) -> RunResult:
        result = RunResult(backend=self.backend, sandboxed=self.sandbox.available, sandbox_mode=self.sandbox.mode)
        self._result, self._cell = result, None  # where a message dropped for its size is counted (``_dropped``)
        self.sandbox.prepare()
        runtime = kernel_folder(self.sandbox)  # the grader's start-up files: read-only to the kernel
        self._startup = []
        # first: nothing before it may import TensorFlow
        if self.keras2:  # first: TensorFlow with tf_keras, and Keras 2's names, before anything imports Keras
            self._kernel_module(runtime, "grader_keras2", KERAS2_KERNEL,
                                "install()" if self.fused else "install(fused=False)")
        elif self.backend == "jax" and not turned_off("GRADER_DEFERRED_TF"):
            self._kernel_module(runtime, "grader_deferred_tf", DEFERRED_TF, "install()")
        if self.fused and not self.keras2:  # the fused fit is Keras 3's
            self._kernel_module(runtime, "grader_fused_fit", FUSED_FIT, FUSED_CALL)
        if self.standins:
            (runtime / "standins").mkdir(exist_ok=True)
            for name, path in self.standins.items():
                (runtime / "standins" / f"{name}.py").write_bytes(Path(path).read_bytes())
        self._kernel_module(runtime, "grader_course", COURSE_KERNEL, "install()")
        if self.capture_dir:
            (runtime / "grader_capture.py").write_text(CAPTURE_HOOK.read_text())
            self._startup.append(str(runtime / "grader_capture.py"))
        # interrupt_on_timeout=False: nbclient raises at the limit and the kernel is killed then.  With True it
        # "interrupts" through jupyter_client's signal to the kernel's process group, which is the sandbox's
        # bubblewrap (SandboxedKernelManager's message interrupt is not what interrupt_kernel calls): that
        # killed the sandbox anyway, and the death was only noticed up to WATCHDOG_GRACE_S later.
        client = CappedClient(self.nb, km=self._new_manager(), timeout=math.ceil(self.cell_timeout),
                              allow_errors=True, interrupt_on_timeout=False, startup_timeout=180, record_timing=False,
                              skip_cells_with_tag="grader-skip", kernel_name="python3",
                              on_cell_executed=self._heard_reply, iopub_timeout=IOPUB_GRACE_S)
        client.max_output_bytes = self.max_output_bytes
        self._replies: dict[int, dict] = {}
        start = time.monotonic()
        try:
            await self._start_kernel(client)
            await self._seed(client)
            try:
                for index, cell in enumerate(self.nb.cells):
                    if cell.cell_type != "code" or not cell.source.strip():
                        continue
                    left = self.notebook_timeout - (time.monotonic() - start)
                    if result.quota_exceeded:
                        result.cells.append(CellRun(index, cell.source, "skipped", "DiskQuota",
                                                    f"{result.quota_exceeded}, so the rest of the notebook was "
                                                    "not run"))
                        continue
                    if left <= 0:
                        result.notebook_timed_out = True
                        result.cells.append(CellRun(index, cell.source, "skipped", "NotebookTimeout",
                                                    f"the notebook ran over its {self.notebook_timeout:.0f} s limit"))
                        continue
                    self._cell = index
                    run = await self._run_cell(client, client.km, cell, index, min(left, self.cell_timeout), result)
                    run.limited_by = "notebook" if left < self.cell_timeout else "cell"
                    result.cells.append(run)
                    self._note_captures(index, result)
                    if self.progress:
                        self.progress(run)
            finally:
                await _discard_kernel(client)
        finally:
            result.seconds = time.monotonic() - start
            result.memory_exhausted = self.sandbox.memory_exhausted()
            self.sandbox.cleanup()
        return result

    async def _start_kernel(self, client, attempts: int = 2):
        """Start the sandboxed kernel, once more after a short pause if it dies at start."""
        for attempt in range(attempts):
            km = client.km  # nbclient drops its reference when the start fails
            try:
                await client.async_start_new_kernel()
                await client.async_start_new_kernel_client()
                return
            except Exception as e:  # jupyter_client raises RuntimeError or TimeoutError here
                stderr = await asyncio.to_thread(km.stderr_text)
                client.km = client.km or km
                await _discard_kernel(client)
                client.km = self._new_manager()
                if attempt + 1 == attempts:
                    said = " ".join(stderr.split())[-600:]
                    raise KernelStartFailed(
                        f"the notebook's Python kernel could not be started in the sandbox ({type(e).__name__}: "
                        f"{str(e)[:160]})." + (f" The kernel said: {said}" if said else ""),
                        hint="This is the grader's environment failing, not your code; a TA should re-run the "
                             "grading.") from None
                await asyncio.sleep(2)

    def _kernel_module(self, runtime: Path, name: str, source: Path, call: str) -> None:
        """Have the kernel load ``source`` as module ``name`` at its start and run ``call`` on it."""
        (runtime / f"{name}.py").write_text(source.read_text())
        loader = runtime / f"{name}_loader.py"
        loader.write_text(KERNEL_MODULE_LOADER.format(name=name, path=str(runtime / f"{name}.py"), call=call))
        self._startup.append(str(loader))

    def _dropped(self, channel: str) -> None:
        """A kernel message dropped for its size (``BoundedKernelManager``): counted for the cell running."""
        result, cell = getattr(self, "_result", None), getattr(self, "_cell", None)
        if result is not None:
            at = 0 if cell is None else cell + 1
            result.dropped_messages[at] = result.dropped_messages.get(at, 0) + 1

    def _heard_reply(self, cell, cell_index, execute_reply):
        """nbclient's ``on_cell_executed`` hook: the kernel's own reply to a cell (its status, and the error's
        name and value when it failed), kept until the cell's run is recorded."""
        content = execute_reply.get("content") if isinstance(execute_reply, dict) else None
        self._replies[cell_index] = content if isinstance(content, dict) else {}

    async def _watch_disk(self, km, result):
        """While a cell runs: stop the kernel the moment the run's files exceed the disk quota."""
        while True:
            await asyncio.sleep(DISK_POLL_S)
            why = await asyncio.to_thread(self.sandbox.over_quota)
            if why:
                result.quota_exceeded = why
                _kill_group(km.kernel_pid)
                return

    async def _run_cell(self, client, km, cell, index, limit, result) -> CellRun:
        t0 = time.monotonic()
        run = CellRun(index, cell.source, "ok", limit_s=limit)
        client.timeout = max(1, math.ceil(limit))  # nbclient's own interrupt, at this cell's limit (whole seconds)
        watchdog = asyncio.create_task(self._watch_disk(km, result))
        client.grader_output_cut = False
        try:
            await asyncio.wait_for(client.async_execute_cell(cell, index, store_history=True),
                                   limit + IOPUB_GRACE_S + WATCHDOG_GRACE_S)
        except Exception as e:
            if result.quota_exceeded:
                run.status, run.error_name, run.error_value = "quota", "DiskQuota", result.quota_exceeded
            else:
                await self._record_failure(e, client, km, run, t0, limit, result)
        else:
            reply = self._replies.pop(index, {})
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    run.status = "error"
                    run.error_name, run.error_value = out.get("ename", ""), str(out.get("evalue", ""))[:500]
                    run.traceback = _short_traceback(out.get("traceback", []))
                    break
            else:  # no traceback shown (a student can silence them): the kernel's reply still says it failed
                if reply.get("status") == "error":
                    run.status = "error"
                    run.error_name = str(reply.get("ename", ""))[:200]
                    run.error_value = str(reply.get("evalue", ""))[:500]
                    lines = reply.get("traceback")  # the kernel's, so the student's: any type, any length
                    run.traceback = _short_traceback([str(line)[:2000] for line in lines[-50:]]
                                                     if isinstance(lines, list) else [])
        finally:
            watchdog.cancel()
        run.output_cut = bool(client.grader_output_cut)
        if not result.quota_exceeded and run.status == "ok":
            why = self.sandbox.over_quota()  # a cell quicker than the watchdog's first look
            if why:
                result.quota_exceeded = why
                run.status, run.error_name, run.error_value = "quota", "DiskQuota", why
        run.seconds = time.monotonic() - t0
        return run

    async def _record_failure(self, e, client, km, run, t0, limit, result):
        """A cell that did not finish: it timed out, killed the kernel, or nbclient met something unexpected.
        The kernel is restarted where it is gone, so the remaining cells still run."""
        timed_out = isinstance(e, (asyncio.TimeoutError, CellTimeoutError)) or (
            isinstance(e, DeadKernelError) and time.monotonic() - t0 >= limit)  # an ignored interrupt
        if timed_out:
            run.stopped_s = time.monotonic() - t0
            run.status, run.error_name = "timeout", "CellTimeout"
            run.error_value = f"the cell ran over the {limit:.0f} s time limit and was stopped"
            await self._restart(client, km, result, kill=True)
        elif isinstance(e, DeadKernelError):
            run.status, run.error_name, run.error_value = "died", "DeadKernel", str(e)[:300]
            await self._restart(client, km, result, kill=True)
        else:  # nbclient raising on something unexpected: record it, keep going
            run.status, run.error_name, run.error_value = "error", type(e).__name__, str(e)[:300]
            if not await km.is_alive():
                run.status = "died"
                await self._restart(client, km, result, kill=False)

    def _note_captures(self, index: int, result: RunResult):
        """Captures that appeared while cell ``index`` ran belong to it."""
        if self.capture_dir is None or not self.capture_dir.is_dir():
            return
        for meta in sorted(self.capture_dir.glob("capture-*.json")):
            if meta.name not in result.capture_cells:
                result.capture_cells[meta.name] = index + 1
                if self.on_capture:
                    self.on_capture(meta, index + 1)

    async def _restart(self, client, km, result, kill: bool):
        """Kill what is left of the kernel (the whole process group) and start a new one."""
        if kill:
            _kill_group(km.kernel_pid)
        result.kernel_restarts += 1
        # bounded: nothing here waits on a file student code could reach (``kernel_folder``), and should a
        # wait hang all the same, the limits this event loop enforces must still fire
        await asyncio.wait_for(km.restart_kernel(now=True), RESTART_TIMEOUT_S)
        await client.kc.wait_for_ready(timeout=RESTART_TIMEOUT_S)
        await self._seed(client)

    async def _seed(self, client):
        """Seed Python, NumPy and Keras in the kernel right before the (next) cell runs: seeding at start-up
        is not enough, because the kernel's own start draws from Python's random in a time-dependent way.
        A student's own ``set_random_seed`` later on still wins."""
        if self.seed is None:
            return
        seed = self.seed % 2**31  # Keras takes seeds below 2**31
        code = (f"import random as _g_random, numpy as _g_np\n_g_random.seed({seed})\n_g_np.random.seed({seed})\n"
                "try:\n    import keras as _g_keras\n    _g_keras.utils.set_random_seed({seed})\n    del _g_keras\n"
                "except Exception:\n    pass\nfinally:\n    del _g_random, _g_np\n").replace("{seed}", str(seed))
        try:
            msg_id = client.kc.execute(code, silent=True, store_history=False, allow_stdin=False)
            await client.async_wait_for_reply(msg_id)
        except Exception:  # a kernel that cannot even take this will fail its first cell, which says so
            pass


def _kill_group(pid: int | None) -> None:
    """Kill the kernel's whole process group (bubblewrap and everything below it)."""
    if pid:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


async def _discard_kernel(client) -> None:
    """Stop the client's kernel (if any) and release its channels and files, whatever state it is in."""
    km, kc = client.km, getattr(client, "kc", None)
    if kc is not None:
        try:
            await ensure_async(kc.stop_channels())
        except Exception:
            pass
        client.kc = None
    if km is None:
        return
    try:
        if await ensure_async(km.is_alive()):
            await ensure_async(km.shutdown_kernel(now=True))
    except Exception:
        _kill_group(km.kernel_pid)
    try:
        await ensure_async(km.cleanup_resources())
    except Exception:
        pass
