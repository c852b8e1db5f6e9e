"""A Jupyter kernel that lives in the sandbox.

``SandboxedKernelManager`` is jupyter_client's ``AsyncKernelManager`` with the kernel command wrapped by
``Sandbox.wrap``, ZMQ's ``ipc`` transport (unix sockets, reached through pinned descriptors), interrupts as
messages, the kernel's last stderr kept, and an environment built from nothing.  The grader's start-up files
and the connection file live in ``kernel_folder``, bound read-only; the kernel starts with ``python -P``.
Why each: docs/design/execute.md.
"""
from __future__ import annotations

import asyncio
import collections
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from .sandbox import Sandbox

STDERR_KEPT = 8192  # bytes of the kernel's stderr kept for messages
PIN_TIMEOUT_S = 180.0  # how long a starting kernel may take to make its sockets
PIN_POLL_S = 0.05
# The last of the kernel's start-up files: puts the work folder (the cwd, as "") on sys.path where IPython
# would (before the installed packages; ``python -P`` and IPython's ``init_path`` leave it off), so that the
# student's own modules (tools.py) import as in Jupyter, once the kernel's own modules and the grader's
# start-up files are loaded from the installation.
SYS_PATH_FILE = "grader_sys_path.py"
#: the messages the kernel's output socket holds for a grader slow to read them.  ZMQ's default, 1000, dropped
#: the end of a print-heavy cell's output on a busy machine, and the kernel's "idle" with it (the grader then
#: waited for it in vain); they wait in the kernel's memory, which the sandbox bounds
IOPUB_QUEUE = 100_000
#: ipykernel_launcher, with that queue set before the output socket is bound (a bound socket keeps its options)
LAUNCH_KERNEL = f"""import zmq
from ipykernel.kernelapp import IPKernelApp
class Kernel(IPKernelApp):
    def init_iopub(self, context):
        context.setsockopt(zmq.SNDHWM, {IOPUB_QUEUE})
        super().init_iopub(context)
Kernel.launch_instance()
"""
SYS_PATH_CODE = """def _grader_sys_path():
    import sys
    if "" in sys.path:
        return
    at = next((i for i, p in enumerate(sys.path) if p.rstrip("/").endswith(("site-packages", "dist-packages"))),
              len(sys.path))
    sys.path.insert(at, "")


_grader_sys_path()
del _grader_sys_path
"""


class SandboxedKernelManager(AsyncKernelManager):
    sandbox: Sandbox = None  # set by the runner before start
    kernel_env: dict = {}
    startup_files: list = []
    # port -> the descriptor number the grader's ZMQ sockets connect through (``/proc/self/fd/N``): a
    # placeholder (connecting there is refused, so ZMQ retries) until the kernel's socket is pinned there
    _pins: dict = None
    _pin_task = None

    def _make_url(self, channel: str) -> str:
        if self.transport != "ipc":
            return super()._make_url(channel)
        return f"ipc:///proc/self/fd/{self._pin_fd(getattr(self, f'{channel}_port'))}"

    def _pin_fd(self, port: int) -> int:
        if self._pins is None:
            self._pins = {}
        if port not in self._pins:
            self._pins[port] = os.open("/", os.O_PATH | os.O_CLOEXEC)
        return self._pins[port]

    def client(self, **kwargs):
        kc = super().client(**kwargs)
        kc._make_url = self._make_url  # the client reaches the kernel through the same pinned sockets
        return kc

    def _socket_paths(self) -> dict[int, str]:
        ports = (self.shell_port, self.iopub_port, self.stdin_port, self.control_port, self.hb_port)
        return {port: f"{self.ip}-{port}" for port in ports}

    def _unpin(self) -> None:
        """Before a (re)launch: every pinned descriptor back to the placeholder, and whatever a previous kernel
        left at the sockets' paths removed (never followed), so that the new kernel can make them."""
        for port in self._socket_paths():
            self._pin_fd(port)
        placeholder = os.open("/", os.O_PATH | os.O_CLOEXEC)
        try:
            for fd in self._pins.values():
                os.dup2(placeholder, fd, inheritable=False)
        finally:
            os.close(placeholder)
        for path in self._socket_paths().values():
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            except OSError:
                pass

    def _pin_all(self) -> bool:
        """Pin the kernel's five sockets, all at once or none: each opened without following a link, and kept
        only if it is a socket of the sandbox user's (or the grader's).  True when they were."""
        owners = {os.geteuid()} | ({self.sandbox.owner_uid} if self.sandbox.owner_uid is not None else set())
        taken = {}
        try:
            for port, path in self._socket_paths().items():
                try:
                    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
                except OSError:
                    return False
                taken[port] = fd
                st = os.fstat(fd)
                if not stat.S_ISSOCK(st.st_mode) or st.st_uid not in owners:
                    return False
            for port, fd in taken.items():
                os.dup2(fd, self._pins[port], inheritable=False)
            return True
        finally:
            for fd in taken.values():
                os.close(fd)

    async def _pin_sockets(self, proc) -> None:
        """Once the kernel has made its sockets (no student code has run in it yet), pin them."""
        deadline = time.monotonic() + PIN_TIMEOUT_S
        while time.monotonic() < deadline and (proc is None or proc.poll() is None):
            if self._pin_all():
                return
            await asyncio.sleep(PIN_POLL_S)

    def _release_pins(self) -> None:
        if self._pin_task is not None:
            self._pin_task.cancel()
            self._pin_task = None
        for fd in (self._pins or {}).values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._pins = {}

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:  # the client's and the manager's sockets are closed by now
            self._release_pins()

    cleanup_resources = _async_cleanup_resources

    def __del__(self):
        try:
            self._release_pins()
        except Exception:
            pass
        super().__del__()

    def format_kernel_cmd(self, extra_arguments=None):
        # -P: the cwd (the work folder) is not on sys.path while the kernel starts: no ipykernel/, zmq.py or
        # numpy.py of the submission is imported in place of the installed one
        argv = [sys.executable, "-P", "-c", LAUNCH_KERNEL, "-f", self.connection_file,
                "--HistoryManager.enabled=False", "--IPKernelApp.quiet=False"]
        files = ", ".join(repr(f) for f in [*self.startup_files, str(Path(self.connection_file).parent /
                                                                     SYS_PATH_FILE)])
        argv.append(f"--IPKernelApp.exec_files=[{files}]")
        argv += list(extra_arguments or [])
        cmd, _ = self.sandbox.wrap(argv, self.kernel_env)
        if self.sandbox.cgroups:  # join the cgroups as root, then become the sandbox
            joins = "; ".join(f"echo $$ > {shlex.quote(str(cg / 'tasks'))}" for cg in self.sandbox.cgroups)
            cmd = ["/bin/sh", "-c", f"{joins}; exec " + " ".join(shlex.quote(c) for c in cmd)]
        return cmd

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        _, env = self.sandbox.wrap([], self.kernel_env)
        kw["env"] = env
        kw["cwd"] = str(self.sandbox.work_dir)
        kw.pop("extra_arguments", None)
        # cell output comes over ZMQ; the kernel's own stderr is kept (bounded) to explain a failed start
        kw["stdout"] = subprocess.DEVNULL
        kw["stderr"] = subprocess.PIPE
        if self.sandbox.owner_uid is not None:  # the kernel, an unprivileged user, must read its connection file
            _give(self.connection_file, self.sandbox.owner_uid)
        self._unpin()
        info = await super()._async_launch_kernel(kernel_cmd, **kw)
        proc = getattr(self.provisioner, "process", None)
        if self._pin_task is not None:
            self._pin_task.cancel()
        self._pin_task = asyncio.ensure_future(self._pin_sockets(proc))
        self.stderr_tail = collections.deque(maxlen=64)
        if proc is not None and proc.stderr is not None:
            self.stderr_reader = threading.Thread(target=_drain, args=(proc.stderr, self.stderr_tail), daemon=True,
                                                  name="grader-kernel-stderr")
            self.stderr_reader.start()
        return info

    def stderr_text(self, wait: float = 5.0) -> str:
        """The last few KB the kernel wrote to stderr (for a kernel that would not start); waits up to
        ``wait`` seconds for a dead kernel's last words to be read."""
        reader = getattr(self, "stderr_reader", None)
        if reader is not None:
            reader.join(wait)
        data = b"".join(getattr(self, "stderr_tail", ()))[-STDERR_KEPT:]
        return data.decode("utf-8", "replace")

    async def _async_interrupt_kernel(self):
        msg = self.session.msg("interrupt_request", content={})
        self._connect_control_socket()
        self.session.send(self._control_socket, msg)

    @property
    def kernel_pid(self) -> int | None:
        proc = getattr(self.provisioner, "process", None)
        return getattr(proc, "pid", None)


def _drain(stream, tail: collections.deque):
    """Read a pipe to its end, keeping only its last blocks (the kernel must never block on a full pipe)."""
    try:
        while block := stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096):
            tail.append(block)
    except (OSError, ValueError):
        pass


def _give(path: str, uid: int) -> None:
    """Make ``path``, a regular file the grader wrote, the sandbox user's: through a descriptor opened without
    following a link, and only if it is still the grader's own regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (os.geteuid(), uid):
            raise RuntimeError(f"{path} is not the grader's connection file (mode {st.st_mode:o}, uid {st.st_uid})")
        os.fchown(fd, uid, uid)
    finally:
        os.close(fd)


def kernel_folder(sandbox: Sandbox) -> Path:
    """The grader's folder of kernel files beside the runtime folder (in the run's private scratch folder): the
    connection file and the grader's start-up files.  Bound read-only at the same path into the sandbox, so
    the kernel reads them and student code can change none of them; the runtime folder, which student code
    can write, keeps only the ipc sockets (which the kernel must create) and what the kernel writes."""
    runtime = Path(sandbox.runtime_dir)
    folder = runtime.with_name(runtime.name + "-kernel")
    try:
        os.mkdir(folder, 0o755)
    except FileExistsError:
        pass
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise RuntimeError(f"{folder} is not the grader's folder (uid {st.st_uid})")
        os.fchmod(fd, 0o755)  # the sandbox user reads it in root mode
    finally:
        os.close(fd)
    if all(outer != folder for outer, _ in sandbox.readonly_dirs):
        sandbox.readonly_dirs.append((folder, str(folder)))
    path_file = folder / SYS_PATH_FILE
    if not path_file.exists():
        path_file.write_text(SYS_PATH_CODE)
    return folder


def configure(km: SandboxedKernelManager, sandbox: Sandbox, env: dict, startup_files: list[str]):
    km.sandbox = sandbox
    km.kernel_env = env
    km.startup_files = startup_files
    km.transport = "ipc"
    km.ip = str(Path(sandbox.runtime_dir) / "kernel")  # the ipc sockets: the kernel creates them
    km.connection_file = str(kernel_folder(sandbox) / "kernel.json")
