"""A Jupyter kernel that lives in the sandbox.

``SandboxedKernelManager`` is jupyter_client's ``AsyncKernelManager`` with
these changes: the kernel command is wrapped by ``Sandbox.wrap`` (and joins
the sandbox's cgroups first); the kernel talks over ZMQ's ``ipc`` transport
(unix sockets in the runtime folder, bound at the same path inside, because
TCP on 127.0.0.1 does not cross the network namespace); interrupts are sent
as messages (a signal to bwrap does not reach the kernel); and the kernel's
stderr is kept (its last few KB), so that a kernel that dies at start says
why.  The kernel's environment is built from nothing: no ``JPY_PARENT_PID``
(ipykernel would exit), no ``GRADER_SECRET``, nothing of the grader's.
"""
from __future__ import annotations

import collections
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from .sandbox import Sandbox

STDERR_KEPT = 8192  # bytes of the kernel's stderr kept for messages


class SandboxedKernelManager(AsyncKernelManager):
    sandbox: Sandbox = None  # set by the runner before start
    kernel_env: dict = {}
    startup_files: list = []

    def format_kernel_cmd(self, extra_arguments=None):
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", os.path.realpath(self.connection_file),
                "--HistoryManager.enabled=False", "--IPKernelApp.quiet=False"]
        if self.startup_files:
            files = ", ".join(repr(f) for f in self.startup_files)
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
            os.chown(self.connection_file, self.sandbox.owner_uid, self.sandbox.owner_uid)
        info = await super()._async_launch_kernel(kernel_cmd, **kw)
        proc = getattr(self.provisioner, "process", None)
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


def configure(km: SandboxedKernelManager, sandbox: Sandbox, env: dict, startup_files: list[str]):
    km.sandbox = sandbox
    km.kernel_env = env
    km.startup_files = startup_files
    km.transport = "ipc"
    km.ip = str(Path(sandbox.runtime_dir) / "kernel")
    km.connection_file = str(Path(sandbox.runtime_dir) / "kernel.json")
