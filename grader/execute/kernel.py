"""A Jupyter kernel that lives in the sandbox.

``SandboxedKernelManager`` is jupyter_client's ``AsyncKernelManager`` with
three changes: the kernel command is wrapped by ``Sandbox.wrap`` (and joins
the sandbox's cgroups first); the kernel talks over ZMQ's ``ipc`` transport
(unix sockets in the runtime folder, bound at the same path inside, because
TCP on 127.0.0.1 does not cross the network namespace); and interrupts are
sent as messages (a signal to bwrap does not reach the kernel).  The kernel's
environment is built from nothing: no ``JPY_PARENT_PID`` (ipykernel would
exit), no ``GRADER_SECRET``, nothing of the grader's.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from .sandbox import SANDBOX_UID, Sandbox


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
        # the kernel's own stdout/stderr never reach the grader's terminal (cell output comes over ZMQ)
        kw["stdout"] = subprocess.DEVNULL
        kw["stderr"] = subprocess.DEVNULL
        if self.sandbox.available:  # the kernel, an unprivileged user, must read its connection file
            os.chown(self.connection_file, SANDBOX_UID, SANDBOX_UID)
        return await super()._async_launch_kernel(kernel_cmd, **kw)

    async def _async_interrupt_kernel(self):
        msg = self.session.msg("interrupt_request", content={})
        self._connect_control_socket()
        self.session.send(self._control_socket, msg)

    @property
    def kernel_pid(self) -> int | None:
        proc = getattr(self.provisioner, "process", None)
        return getattr(proc, "pid", None)


def configure(km: SandboxedKernelManager, sandbox: Sandbox, env: dict, startup_files: list[str]):
    km.sandbox = sandbox
    km.kernel_env = env
    km.startup_files = startup_files
    km.transport = "ipc"
    km.ip = str(Path(sandbox.runtime_dir) / "kernel")
    km.connection_file = str(Path(sandbox.runtime_dir) / "kernel.json")
