"""The sandbox that student code runs in.

``Sandbox.wrap(argv)`` returns the command that runs ``argv`` isolated:

* **bubblewrap** (Debian's ``bwrap``, started as root) builds a private
  mount namespace: read-only views of the system, the Python installation and
  the virtual environment; a private writable work directory holding a copy of
  the submission's files; a private ``/tmp``; no ``/root``, ``/etc/shadow`` or
  grader state; ``/proc/sys`` read-only; new network (loopback only), PID, IPC
  and UTS namespaces; killed with its parent.
* inside it, ``setpriv`` drops to an unprivileged uid with no capabilities and
  ``no_new_privs`` before any student code runs: started by root with only
  ``--uid``, bwrap would leave the code root in its user namespace.
* resource caps: ``RLIMIT_DATA`` per process (TensorFlow's thread creation
  breaks under ``RLIMIT_AS``), ``RLIMIT_NPROC`` (honoured because the uid is
  not 0), ``RLIMIT_FSIZE``, and, where the cgroup v1 ``memory`` and ``pids``
  controllers can be written, a memory and process cap for the whole tree.

Where bwrap cannot be had (a student's Mac running ``grader check``),
``Sandbox.available`` is False, ``wrap`` only applies the rlimits, and
callers must warn loudly (``Sandbox.warning``).
"""
from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

SANDBOX_UID = 65534  # nobody
HOME = "/home/student"
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 4096        # per process (RLIMIT_DATA) and, with cgroups, for the whole tree
    processes: int = 256         # RLIMIT_NPROC / pids.max
    file_size_mb: int = 512      # largest file the code may write


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


class Sandbox:
    """One isolated run: a work directory and a runtime directory on the host."""

    def __init__(self, work_dir: Path, runtime_dir: Path, limits: Limits = Limits(), *,
                 shared_dirs: tuple = (), python_paths: list[str] | None = None, isolate: bool = True):
        self.work_dir = Path(work_dir)
        # bound read-write at the same path inside: the kernel's ZMQ ipc sockets and connection file,
        # and the folder the capture hook writes to
        self.runtime_dir = Path(runtime_dir)
        self.shared_dirs = [self.runtime_dir, *map(Path, shared_dirs)]
        self.limits = limits
        self.bwrap = bwrap_path() if sys.platform.startswith("linux") else None
        self.is_root = os.geteuid() == 0
        self.available = isolate and bool(self.bwrap) and self.is_root
        self.python_paths = python_paths or _python_paths()
        self.cgroups: list[Path] = []

    @property
    def warning(self) -> str:
        return unavailable_reason() or "NO SANDBOX: isolation was turned off for this run."

    @property
    def inner_work(self) -> str:
        """The work directory as the code inside sees it."""
        return HOME if self.available else str(self.work_dir)

    def prepare(self):
        """Make the host directories writable by the sandbox user; create cgroups."""
        for d in (self.work_dir, *self.shared_dirs):
            d.mkdir(parents=True, exist_ok=True)
            if self.available:
                for p in [d, *d.rglob("*")]:
                    os.chown(p, SANDBOX_UID, SANDBOX_UID, follow_symlinks=False)
        if self.available:
            self.cgroups = _make_cgroups(self.limits)

    def wrap(self, argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """(command, environment of the command) that run ``argv`` with ``env`` in the sandbox."""
        limits = self.limits

        # rlimits hold for every process below.  RLIMIT_NPROC counts every thread of the uid on the
        # whole machine, so where a pids cgroup caps this sandbox's tree it is only a wide backstop
        nproc = limits.processes if not self.cgroups else max(8 * limits.processes, 4096)
        rlimits = ["prlimit", f"--data={limits.memory_mb * 2**20}", f"--fsize={limits.file_size_mb * 2**20}",
                   "--core=0", f"--nproc={nproc}", "--"]
        if not self.available:
            plain = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")}
            return rlimits + list(argv), {**plain, **env}

        cmd = [self.bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
               "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
        made = set()

        def ensure_parents(target):
            for d in _ancestors(target):
                if d not in made:
                    cmd.extend(["--perms", "0755", "--dir", d])
                    made.add(d)

        for src in ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc/ssl", "/etc/alternatives",
                    "/etc/ld.so.cache", "/etc/localtime", "/etc/fonts"):
            if os.path.exists(src):
                ensure_parents(src)
                cmd.extend(["--ro-bind", src, src])
        for src in self.python_paths:
            ensure_parents(src)
            cmd.extend(["--ro-bind", src, src])
        cmd.extend(["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev",
                    "--perms", "1777", "--tmpfs", "/tmp"])
        for inner, outer in ((HOME, self.work_dir), *((str(d), d) for d in self.shared_dirs)):
            ensure_parents(inner)
            cmd.extend(["--bind", str(outer), inner])
        for hidden in _grader_code_paths(self.python_paths):
            cmd.extend(["--tmpfs", hidden])  # the grader's own package, if installed there
        cmd.extend(["--chdir", HOME, "--clearenv"])
        for k, v in env.items():
            cmd.extend(["--setenv", k, v])
        # drop to an unprivileged user before anything of the student's runs
        cmd += ["--", "setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *rlimits]
        cmd.extend(argv)
        return cmd, {"PATH": "/usr/bin:/bin"}

    def cleanup(self):
        for cg in self.cgroups:
            _remove_cgroup(cg)
        self.cgroups = []

    def memory_exhausted(self) -> bool:
        """True when the memory cgroup hit its limit (an OOM kill in the tree)."""
        for cg in self.cgroups:
            f = cg / "memory.failcnt"
            if f.exists():
                try:
                    return int(f.read_text().strip() or 0) > 0
                except (OSError, ValueError):
                    return False
        return False


def unavailable_reason() -> str | None:
    """Why notebooks cannot run isolated on this machine, in words; None when they can."""
    if not (sys.platform.startswith("linux") and bwrap_path()):
        return ("NO SANDBOX: bubblewrap (bwrap) is not installed, so student code runs with your own "
                "permissions, network and files. Install it (apt-get install bubblewrap) before grading "
                "others' work.")
    if os.geteuid() != 0:
        return ("NO SANDBOX: the grader is not running as root, so it cannot drop student code to an "
                "unprivileged user inside bubblewrap; student code runs with your permissions.")
    return None


def _python_paths() -> list[str]:
    """The Python installation and environment, read-only inside (the grader package masked)."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    return sorted(paths)


def _make_cgroups(limits: Limits) -> list[Path]:
    made = []
    name = f"grader-{uuid.uuid4().hex[:12]}"
    for controller, settings in (("memory", {"memory.limit_in_bytes": str(limits.memory_mb * 2**20),
                                             "memory.memsw.limit_in_bytes": str(limits.memory_mb * 2**20)}),
                                 ("pids", {"pids.max": str(limits.processes)})):
        base = CGROUP_ROOT / controller
        if not (base / "tasks").exists():
            continue
        try:
            cg = base / name
            cg.mkdir()
            for key, value in settings.items():
                try:
                    (cg / key).write_text(value)
                except OSError:
                    pass
            made.append(cg)
        except OSError:
            continue
    return made


def _remove_cgroup(cg: Path, attempts: int = 50):
    """Kill whatever is left in the cgroup and remove it (retrying while processes die)."""
    for _ in range(attempts):
        try:
            for pid in (cg / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            cg.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


def _grader_code_paths(bound: list[str]) -> list[str]:
    """The installed grader package, when it sits inside a folder bound into the sandbox."""
    package = os.path.realpath(Path(__file__).resolve().parent.parent)
    return [package] if any(package.startswith(b.rstrip("/") + "/") for b in bound) else []
