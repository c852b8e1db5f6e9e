"""One grader at a time per output folder: an advisory lock on ``.grader.lock``.

``flock`` is released by the kernel when the holder dies, SIGKILL included, so
a killed batch never leaves a stale lock behind.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ..errors import OutputBusy, OutputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the gradebook's own locking still holds
    fcntl = None


class OutputLock:
    def __init__(self, out_dir: Path, *, wait: float = 0.0):
        self.path = Path(out_dir) / ".grader.lock"
        self.wait = wait
        self._fd = None

    def __enter__(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise OutputError(f"cannot use the output folder {self.path.parent}: {e.strerror or e}") from None
        if fcntl is not None:
            deadline = time.monotonic() + self.wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = self._holder(fd)
                        os.close(fd)
                        raise OutputBusy(
                            f"another grader ({holder}) is writing to {self.path.parent}; two at once would mix "
                            "their results.", hint="Wait for it to finish (or use --wait SECONDS), or choose "
                            "another --out.") from None
                    time.sleep(0.2)
        try:  # say who holds it, for the message above; a full disk must not stop the run here
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        except OSError:
            pass
        self._fd = fd
        return self

    @staticmethod
    def _holder(fd) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"pid {info['pid']} on {info['host']}, since {info['since']}"
        except (OSError, ValueError, KeyError):
            return "another process"

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None
