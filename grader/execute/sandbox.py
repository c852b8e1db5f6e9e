"""The sandbox that student code runs in.

``Sandbox.wrap(argv)`` runs ``argv`` isolated in one of four modes (``isolation_mode()``, in words
``describe``): ``root`` (bubblewrap, then ``setpriv`` to uid 65534 and a nested bubblewrap that forbids user
namespaces; cgroups), ``dropped`` (root without ``CAP_SYS_ADMIN``: ``setpriv`` to uid 65534, then the
``user`` mode's bubblewrap), ``user`` (one unprivileged bubblewrap, rlimits) or ``none`` (rlimits only;
``probe`` says why).  ``stage`` copies the submission into the work folder; ``disk_usage`` bounds what a run
writes.  What each mode mounts and why, and the review of ``dropped``: docs/design/execute.md.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import untrusted

SANDBOX_UID = 65534  # nobody
HOME = "/home/student"
COLAB_HOME = "/content"  # Colab's working folder, a link to HOME in the sandbox
SUBMISSION = "/submission"  # where the submission is bound, read-only, while it is staged
CGROUP_ROOT = Path("/sys/fs/cgroup")
STAGE_SCRIPT = Path(__file__).with_name("stage_files.py")
STAGE_TIMEOUT_S = 120.0
#: how deep the disk quota's walk looks; folders nested deeper are themselves over the quota
MAX_DEPTH = 64


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 4096        # per process (RLIMIT_DATA) and, with cgroups, for the whole tree
    processes: int = 256         # RLIMIT_NPROC / pids.max
    file_size_mb: int = 512      # largest file the code may write
    tmp_mb: int = 256            # the private /tmp (tmpfs)
    disk_mb: int = 512           # the work and capture folders together (the runner's watchdog)
    max_files_written: int = 5000


@dataclass
class StageReport:
    """What staging copied into the work folder, and what it left out (with why)."""

    copied: int = 0
    bytes: int = 0
    skipped: list = field(default_factory=list)  # [[relative path, why, special], ...] (special: a link or a
    #                                              pipe, socket or device, which intake names already)


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _refused(words: str) -> bool:
    """Whether a walk's words say a folder was refused for its permissions (Python leaves C's error messages
    untranslated, so these are its words); a folder removed while the walk looks ("No such file") is no fault."""
    return "Permission denied" in words or "Operation not permitted" in words


def bwrap_path() -> str | None:
    return shutil.which("bwrap") if sys.platform.startswith("linux") else None


#: what the probe's command prints inside the sandbox when it ran there (``probe``)
PROBE_WORD = "grader-sandbox-probe-ok"
PROBE_TIMEOUT_S = 60.0

#: the sandbox's /dev/shm (a tmpfs of its own: bubblewrap's /dev is read-only to student code)
SHM_MB = 64

NO_BWRAP = ("NO SANDBOX: bubblewrap (bwrap) is not installed, so student code would run with your own "
            "permissions, network and files. Install it (apt-get install bubblewrap) before grading others' work.")


#: root that cannot give the sandbox user the folders the root mode hands it: why, by errno
NO_SANDBOX_USER = ("NO SANDBOX: the grader runs as root, but this root cannot hand files to uid 65534, the user student "
                   "code runs as ({error}): {why}. Run the grader as an ordinary, non-root user, or in a container "
                   "whose root may give files to uid 65534.")
NO_CHOWN = {errno.EINVAL: "it is the root of a user namespace that maps no uid 65534 (unshare -r, or a container "
                          "that maps only root; rootless Podman and Docker map 65536 ids)",
            errno.EPERM: "it lacks the capability to change a file's owner (CAP_CHOWN: a container that drops it)"}


#: the modes whose sandbox runs as uid 65534 outside too: the grader, root, hands it its folders
ROOT_MODES = ("root", "dropped")

#: how each mode runs student code, in words (``describe``, ``probe``)
MODE_WORDS = {
    "root": "as root: bubblewrap, then setpriv to uid 65534, then a nested unprivileged bubblewrap",
    "dropped": ("as root without CAP_SYS_ADMIN: setpriv to uid 65534, then bubblewrap in a new user namespace "
                "(an ordinary user's sandbox)"),
    "user": "as uid {uid}: bubblewrap in a new user namespace",
}

#: what fixes a container where root's own sandbox does not start
ROOT_FIX = ("Containers often forbid this (Docker without --privileged, or without CAP_SYS_ADMIN and a seccomp "
            "and AppArmor profile that allow new namespaces; many CI and autograder containers): grade on a VM "
            "or a host, or start the container with --privileged (or --cap-add SYS_ADMIN --security-opt "
            "seccomp=unconfined --security-opt apparmor=unconfined).")

#: the container flags that give root its own sandbox
ROOT_FIX_FLAGS = ("give root its own sandbox: docker run --cap-add SYS_ADMIN --security-opt seccomp=unconfined "
                  "--security-opt apparmor=unconfined ... (or docker run --privileged ...).")

#: what fixes a container where neither root's sandbox nor uid 65534's starts
CONTAINER_FIX = (
    "Start the container so that one of them can: with CAP_SYS_ADMIN and new namespaces allowed (docker run "
    "--cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined ..., or docker "
    "run --privileged ...), or with user namespaces allowed (docker run --security-opt seccomp=unconfined "
    "--security-opt apparmor=unconfined ..., on a host where unprivileged user namespaces are enabled: sysctl "
    "kernel.unprivileged_userns_clone=1, and on Ubuntu 24.04 kernel.apparmor_restrict_unprivileged_userns=0); "
    "or grade on a VM or a host.")

#: an ordinary user's sandbox is proven to start here (``probe("user")`` as root)
USER_IS_ENOUGH = (" Here bubblewrap in a new user namespace (the sandbox of an ordinary user) does start: running "
                  "the grader as an ordinary, non-root user is enough.")


@dataclass(frozen=True)
class _Failed:
    """Why a probe's sandbox did not start: the whole message, what the sandbox said (with its exit code), the
    fix, and the cause: ``chown`` (root cannot hand uid 65534 its folders), ``python`` (uid 65534 cannot read
    or reach the grader's Python), ``reach`` (nor its scratch folders) or ``start`` (the sandbox did not start:
    most often, namespaces refused)."""
    message: str
    said: str
    fix: str
    cause: str


@functools.lru_cache(maxsize=1)
def _proof() -> tuple[str, str | None]:
    """(mode, why there is no sandbox or None), proven by ``probe`` once per process (``prove_isolation``
    proves it again).  Root whose own sandbox does not start (no ``CAP_SYS_ADMIN``: Docker's default) uses
    the ``dropped`` mode instead where that one starts (docs/design/execute.md: its review)."""
    if not bwrap_path():
        return "none", NO_BWRAP
    if os.geteuid() != 0:
        failed = _probe("user")
        return ("user", None) if failed is None else ("none", failed.message)
    root = _probe("root")
    if root is None:
        return "root", None
    if root.cause != "start":  # what stops root's sandbox (no CAP_CHOWN, its Python) stops uid 65534's too
        return "none", root.message
    dropped = _probe("dropped")
    if dropped is None:
        return "dropped", None
    fix = f"{dropped.fix} Or {ROOT_FIX_FLAGS}" if dropped.cause != "start" else CONTAINER_FIX
    user = USER_IS_ENOUGH if USER_IS_ENOUGH in root.fix else ""
    return "none", (f"NO SANDBOX: bubblewrap is installed, but neither sandbox of root starts on this machine. "
                    f"Root's own ({MODE_WORDS['root']}) said: {root.said}. The one it falls back to without "
                    f"CAP_SYS_ADMIN ({MODE_WORDS['dropped']}) said: {dropped.said}. {fix}{user}")


def describe(mode: str | None = None) -> str:
    """How student code runs in ``mode`` (by default this machine's proven one), in words, for the TA's
    terminal and grader.log."""
    mode = mode or isolation_mode()
    if mode == "none":
        return "no sandbox: student code runs with the grader's own permissions"
    words = f"sandbox mode '{mode}': student code runs {MODE_WORDS[mode].format(uid=os.getuid())}"
    if mode == "dropped":
        words += ("; root's own sandbox does not start here. Memory is capped per process, and by a cgroup only "
                  "where root may make one (docs/design/execute.md)")
    return words


def isolation_mode() -> str:
    """``root``, ``dropped``, ``user`` or ``none``: how this machine isolates student code (see the module
    doc), proven: a mode other than ``none`` only when a command run through ``Sandbox.wrap`` in that mode
    ran (``probe``)."""
    return _proof()[0]


def unavailable_reason() -> str | None:
    """Why notebooks cannot run isolated on this machine, in words (what failed, and what to do); None when
    they can."""
    return _proof()[1]


def prove_isolation() -> str | None:
    """Prove afresh that the sandbox starts here, before the first notebook of a batch, a check, a calibration
    or a Gradescope run: ``unavailable_reason()`` after a new ``probe`` (which every sandbox of this process
    then goes by)."""
    _proof.cache_clear()
    return unavailable_reason()


def probe(mode: str) -> str | None:
    """Run a trivial Python command in a sandbox of ``mode`` exactly as student code runs (``Sandbox.wrap``
    with the same flags: as root bubblewrap, setpriv to the sandbox user and the nested unprivileged
    bubblewrap; dropped, setpriv to the sandbox user and bubblewrap with a user namespace; otherwise
    bubblewrap with a user namespace; the same binds, /tmp, rlimits).  None when it ran and said
    ``PROBE_WORD``; otherwise why not, with what bubblewrap said and what to do."""
    failed = _probe(mode)
    return None if failed is None else failed.message


def _probe(mode: str) -> _Failed | None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="grader-probe-") as tmp:
        sandbox = Sandbox(Path(tmp) / "work", Path(tmp) / "runtime", mode=mode)
        try:
            try:
                sandbox.prepare()
            except OSError as e:
                if mode in ROOT_MODES and e.errno in NO_CHOWN:
                    message = NO_SANDBOX_USER.format(error=f"{type(e).__name__}: {e}", why=NO_CHOWN[e.errno])
                    return _Failed(message, f"{type(e).__name__}: {e}", message, "chown")
                raise
            cmd, env = sandbox.wrap([sys.executable, "-I", "-c", f"print({PROBE_WORD!r})"], {"LANG": "C.UTF-8"})
            done = subprocess.run(cmd, env=env, cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=PROBE_TIMEOUT_S)
            said, code = (done.stderr or done.stdout).decode("utf-8", "replace"), done.returncode
            if code == 0 and PROBE_WORD in done.stdout.decode("utf-8", "replace"):
                return None
        except subprocess.TimeoutExpired:
            said, code = f"it did not finish within {PROBE_TIMEOUT_S:.0f} s", None
        except OSError as e:
            said, code = f"{type(e).__name__}: {e}", None
        finally:
            sandbox.cleanup()
    said = " ".join(said.split())[-400:] or "nothing"
    said += f" (exit code {code})" if code is not None else ""
    how = MODE_WORDS[mode].format(uid=os.getuid())
    denied = mode in ROOT_MODES and "Permission denied" in said
    unreadable = _unreadable_python(reach=mode == "dropped") if denied else []
    if unreadable:  # the grader's own Python is private to its owner (a umask of 077, or under /root)
        cause = "python"
        path, above = unreadable[0]
        if above:  # a folder above the Python, such as /root: to be passed through, never to be read
            fix = (f"uid 65534 cannot reach the grader's Python: {path} (mode {os.stat(path).st_mode & 0o777:o}) "
                   f"lies above it. Install the grader's Python where every user can reach it (not under {path}: "
                   f"/opt or /usr/local), or let others pass through {path} (chmod o+x {path}).")
        else:
            fix = (f"uid 65534 cannot read the grader's Python: {', '.join(p for p, _ in unreadable)} (a folder or "
                   f"file not readable by other users, as a umask of 077 installs them). Make it readable (chmod "
                   f"-R o+rX {path}), or install the grader's Python where every user can read it.")
    elif mode == "dropped" and denied and not _passable(Path(tmp).parent):
        cause = "reach"
        fix = (f"uid 65534 cannot reach the grader's scratch folders in {Path(tmp).parent} (TMPDIR): set TMPDIR "
               f"to a folder every user may pass through, such as /tmp.")
    elif mode == "root":
        cause = "start"
        fix = ROOT_FIX + (USER_IS_ENOUGH if _probe("user") is None else "")
    elif mode == "dropped":
        cause, fix = "start", CONTAINER_FIX
    else:
        cause = "start"
        fix = ("Enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 "
               "also kernel.apparmor_restrict_unprivileged_userns=0), or run the grader as root.")
    return _Failed(f"NO SANDBOX: bubblewrap is installed, but the sandbox student code runs in does not start on "
                   f"this machine ({how}); it said: {said}. {fix}", said, fix, cause)


def _unreadable_python(reach: bool = False) -> list[tuple[str, bool]]:
    """The folders of the grader's Python (bound into the sandbox as they are) and its interpreter that uid
    65534, neither their owner nor in their group, cannot enter and read, or run: why a root probe was denied.
    ``reach``: also the folders above them, which bubblewrap run by uid 65534 (``dropped``) must pass through.
    [(path, whether it is a folder above one)]."""
    found = []
    for folder in _python_paths():
        above = [str(p) for p in reversed(Path(folder).parents)] if reach else []
        for path, need in [*((p, 0o001) for p in above), (folder, 0o005)]:
            try:
                if os.stat(path).st_mode & need != need:
                    found.append((path, need == 0o001))
                    break
            except OSError:
                break
    exe = os.path.realpath(sys.executable)
    try:
        if not found and os.stat(exe).st_mode & 0o005 != 0o005:
            found.append((exe, False))
    except OSError:
        pass
    return list(dict.fromkeys(found))


class Sandbox:
    """One isolated run: a work folder and a runtime folder on the host."""

    def __init__(self, work_dir: Path, runtime_dir: Path, limits: Limits = Limits(), *,
                 shared_dirs: tuple = (), python_paths: list[str] | None = None, isolate: bool = True,
                 readonly_dirs: tuple = (), mode: str | None = None):
        self.work_dir = Path(work_dir)
        # bound read-write at the same path inside: the kernel's ZMQ ipc sockets and connection file,
        # and the folder the capture hook writes to
        self.runtime_dir = Path(runtime_dir)
        self.shared_dirs = [self.runtime_dir, *map(Path, shared_dirs)]
        # (host folder, path inside): the grader's folders the code may read and never write (the compile
        # cache, ``compile_cache``); bound only where there is a sandbox
        self.readonly_dirs = [(Path(host), inner) for host, inner in readonly_dirs]
        self.limits = limits
        # ``mode``: the isolation to use (``probe``); by default the machine's proven one
        self.mode = (mode or isolation_mode()) if isolate else "none"
        self.bwrap = bwrap_path()
        self.python_paths = python_paths or _python_paths()
        self.cgroups: list[Path] = []

    @property
    def available(self) -> bool:
        return self.mode != "none"

    @property
    def owner_uid(self) -> int | None:
        """The uid that must own the folders the sandbox writes (None: they stay the grader's)."""
        return SANDBOX_UID if self.mode in ROOT_MODES else None

    @property
    def warning(self) -> str:
        return unavailable_reason() or "NO SANDBOX: isolation was turned off for this run."

    @property
    def inner_work(self) -> str:
        """The work folder as the code inside sees it."""
        return HOME if self.available else str(self.work_dir)

    def prepare(self):
        """Create the host folders, owned by the sandbox user as root; create cgroups.  In ``dropped`` mode
        bubblewrap runs as the sandbox user and must reach them: the run's own scratch folder that holds them
        (the grader's, private) is opened to the sandbox user's group, to pass through, not to list."""
        for d in (self.work_dir, *self.shared_dirs):
            d.mkdir(parents=True, exist_ok=True)
            if self.owner_uid is not None:
                os.chown(d, self.owner_uid, self.owner_uid, follow_symlinks=False)
        if self.mode == "dropped":
            for scratch in {d.parent for d in (self.work_dir, *self.shared_dirs)}:
                _open_to_sandbox_group(scratch)
        if self.mode in ROOT_MODES and not self.cgroups:
            self.cgroups = _make_cgroups(self.limits)

    # -- commands -------------------------------------------------------------
    def _rlimits(self) -> list[str]:
        limits = self.limits
        # RLIMIT_NPROC counts every thread of the uid: where a pids cgroup caps this sandbox's tree it is a
        # wide backstop only, and in user mode the uid is the TA's own, whose other processes count too
        if self.cgroups:
            nproc = max(8 * limits.processes, 4096)
        elif self.mode in ("user", "dropped"):  # the uid's other processes count too (other sandboxes')
            nproc = _tasks_of_uid(SANDBOX_UID if self.mode == "dropped" else os.getuid()) + limits.processes
        else:
            nproc = limits.processes
        fsize = min(limits.file_size_mb, limits.disk_mb) * 2**20
        # the out-of-memory killer's first choice: without a memory cgroup (user mode) RLIMIT_DATA caps each
        # process, not how many, and the machine's OOM killer could pick the grader's worker or a classmate's
        # kernel before the many processes that filled the memory
        oom = ["choom", "-n", "1000", "--"] if shutil.which("choom") else []
        return oom + ["prlimit", f"--data={limits.memory_mb * 2**20}", f"--fsize={fsize}", "--core=0",
                      f"--nproc={nproc}", "--"]

    def _proc_sys(self) -> list[str]:
        """/proc/sys read-only -- in root mode by the nested bubblewrap instead, which must first write
        its own ``user.max_user_namespaces`` there (that is how ``--disable-userns`` works)."""
        return [] if self.mode == "root" else ["--ro-bind", "/proc/sys", "/proc/sys"]

    def wrap(self, argv: list[str], env: dict[str, str], *, stage_from: Path | None = None,
             stage_name: str | None = None) -> tuple[list[str], dict[str, str]]:
        """(command, environment of the command) that run ``argv`` with ``env`` in the sandbox.

        ``stage_from``: a folder (or, with ``stage_name``, a single file) of the submission, bound read-only
        at ``SUBMISSION`` for the staging copy."""
        if not self.available:
            plain = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")}
            return self._rlimits() + list(argv), {**plain, **env}

        cmd = []
        if self.mode == "dropped":  # root without CAP_SYS_ADMIN: the user mode's sandbox, started by uid 65534
            cmd += _drop_to_sandbox_user()
        cmd += [self.bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
        if self.mode in ("user", "dropped"):
            cmd += ["--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
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
        # /tmp before anything that may live below it (a virtual environment under /tmp, the scratch folders)
        cmd.extend(["--proc", "/proc", *self._proc_sys(), "--dev", "/dev",
                    # POSIX semaphores and shared memory (multiprocessing's Lock, Pool; Keras 2's
                    # use_multiprocessing) live in /dev/shm: a size-capped tmpfs of its own, as /tmp
                    "--perms", "1777", "--size", str(SHM_MB * 2**20), "--tmpfs", "/dev/shm",
                    "--perms", "1777", "--size", str(self.limits.tmp_mb * 2**20), "--tmpfs", "/tmp"])
        made.add("/tmp")
        for src in self.python_paths:
            ensure_parents(src)
            cmd.extend(["--ro-bind", src, src])
        for inner, outer in ((HOME, self.work_dir), *((str(d), d) for d in self.shared_dirs)):
            ensure_parents(inner)
            cmd.extend(["--bind", str(outer), inner])
        for outer, inner in self.readonly_dirs:
            # gone since it was chosen, or (dropped) out of the sandbox user's reach, as the compile cache under
            # /root is: the code does without
            if not outer.is_dir() or (self.mode == "dropped" and not _reachable(outer)):
                continue
            ensure_parents(inner)
            cmd.extend(["--ro-bind", str(outer), inner])
        if stage_from is not None:
            target = f"{SUBMISSION}/{stage_name}" if stage_name else SUBMISSION
            ensure_parents(target)
            cmd.extend(["--ro-bind", str(stage_from), target])
        for hidden in _grader_code_paths(self.python_paths):
            cmd.extend(["--tmpfs", hidden])  # the grader's own package, if installed there
        cmd.extend(["--symlink", HOME, COLAB_HOME])  # Colab's working folder: '/content/model.h5' is the work folder's
        # bubblewrap's own tmpfs (the root, /dev) are unbounded (half the RAM), and in user mode the code owns them:
        # read-only, so that only the quota-bounded folders above take its files
        cmd.extend(["--remount-ro", "/dev", "--remount-ro", "/"])
        cmd.extend(["--chdir", HOME, "--clearenv"])
        for k, v in env.items():
            cmd.extend(["--setenv", k, v])
        cmd.append("--")
        if self.mode == "root":
            # drop to an unprivileged user before anything of the student's runs; staging keeps one
            # capability, to read the TA's files whatever their mode (it runs no student code)
            caps = "+dac_read_search" if stage_from is not None else ""
            cmd += _drop_to_sandbox_user(caps)
            if stage_from is None:  # no user namespaces for student code: a nested, unprivileged bubblewrap
                cmd += [self.bwrap, "--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID),
                        "--gid", str(SANDBOX_UID), "--dev-bind", "/", "/", "--ro-bind", "/proc/sys", "/proc/sys",
                        "--die-with-parent", "--"]
        cmd += self._rlimits()
        cmd.extend(argv)
        return cmd, {"PATH": "/usr/bin:/bin"}

    def stage(self, source: Path, *, single_file: bool, bounds: untrusted.Bounds) -> StageReport:
        """Copy the submission at ``source`` (a folder, or one file) into the work folder, inside the sandbox."""
        self.prepare()
        if not self.available:  # no sandbox: the same bounded, link-refusing copy, done here
            return _stage_here(Path(source), self.work_dir, single_file, bounds)
        if self.mode == "dropped":
            # uid 65534 in a user namespace has no CAP_DAC_READ_SEARCH over the TA's files: root copies them
            # with the same rules (never a link: each folder opened without following one), into the fresh work
            # folder no process has yet run in, and hands the copies to the sandbox user
            report = _stage_here(Path(source), self.work_dir, single_file, bounds)
            _give_tree(self.work_dir, SANDBOX_UID)
            return report
        script = self.runtime_dir / "stage_files.py"
        script.write_text(STAGE_SCRIPT.read_text())
        argv = [sys.executable, "-I", "-S", str(script), SUBMISSION, HOME, str(bounds.max_entries),
                str(bounds.max_bytes), str(bounds.max_depth)]
        source = Path(source)
        # bound through a descriptor opened without following links: what is bound is what intake looked at
        flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if single_file else os.O_DIRECTORY)
        try:
            fd = os.open(source, flags)
        except OSError as e:
            return StageReport(skipped=[[source.name, f"cannot be opened ({e.strerror or e})", False]])
        try:
            cmd, env = self.wrap(argv, {"LANG": "C.UTF-8"}, stage_from=Path(f"/proc/self/fd/{fd}"),
                                 stage_name=source.name if single_file else None)
            done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, pass_fds=(fd,),
                                  timeout=STAGE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return StageReport(skipped=[[".", f"copying the submission took longer than {STAGE_TIMEOUT_S:.0f} s",
                                         False]])
        finally:
            os.close(fd)
        try:
            report = json.loads(done.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
            skipped = [[str(rel)[:300], str(why)[:300], bool(special)] for rel, why, special in report["skipped"][:200]]
            return StageReport(int(report["copied"]), int(report["bytes"]), skipped)
        except (ValueError, IndexError, KeyError, TypeError):
            tail = done.stderr.decode("utf-8", "replace")[-600:]
            raise SandboxFailed(f"copying the submission into the sandbox failed (exit code {done.returncode}): "
                                f"{tail}") from None

    def disk_usage(self) -> tuple[int, int, str | None]:
        """(bytes, files and folders, why some could not be counted: None when all could) in the work, runtime
        and capture folders (every folder the code can write outside its size-capped /tmp), counted without
        following links and without counting past the quota.  Not counted: what lies in folders nested
        ``MAX_DEPTH`` deep, or in folders the grader may not read (an unprivileged grader, user mode, is refused a
        folder of mode 0o300 that the code still writes into)."""
        total, entries, uncounted = 0, 0, None
        for d in (self.work_dir, *self.shared_dirs):
            walk = untrusted.Walk(d, untrusted.Bounds(max_entries=self.limits.max_files_written + 1,
                                                      max_bytes=2**62, max_depth=MAX_DEPTH))
            for e in walk:
                entries += 1
                total += e.size
                if e.kind == "dir" and e.relative.count("/") + 1 >= MAX_DEPTH:  # what it holds was not looked at
                    uncounted = uncounted or f"the notebook nested folders {MAX_DEPTH} or more deep"
                elif e.kind.startswith("unreadable") and _refused(e.kind):
                    uncounted = uncounted or f"the notebook made a folder the grader cannot read ({e.relative[:100]})"
            if not walk.entries and any(_refused(p) for p in walk.problems):  # the folder itself
                uncounted = uncounted or "the notebook made its folder unreadable to the grader"
        return total, entries, uncounted

    def over_quota(self) -> str | None:
        """Why the run's files exceed the quota, in words; None while within it."""
        used, entries, uncounted = self.disk_usage()
        if uncounted:  # what could not be counted is not bounded: that itself is over the quota
            return uncounted
        if used > self.limits.disk_mb * 2**20:
            return f"the notebook's files grew past the grader's disk quota of {self.limits.disk_mb} MB"
        if entries > self.limits.max_files_written:
            return f"the notebook created more than {self.limits.max_files_written} files and folders"
        return None

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


class SandboxFailed(RuntimeError):
    """The sandbox itself did not work (the grader's environment, not the student's code)."""


def _stage_here(source: Path, dest: Path, single_file: bool, bounds: untrusted.Bounds) -> StageReport:
    """Staging without a sandbox: the same rules (regular files only, never a link, bounded)."""
    report = StageReport()
    if single_file:
        entries, base = [untrusted.Entry(source.name, "file", 0)], source.parent
    else:
        walk = untrusted.Walk(source, bounds, skip=lambda n: n.startswith(".") or n == "__MACOSX")
        entries, base = list(walk), source
        report.skipped += [[".", p, False] for p in walk.problems]
    for e in entries:
        target = dest / e.relative
        if e.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif not e.is_file:
            report.skipped.append([e.relative, e.kind, True])
        else:
            try:
                untrusted.take_relative(base, e.relative, target, bounds.max_bytes - report.bytes)
                report.copied += 1
                report.bytes += target.stat().st_size
            except (untrusted.Refused, OSError) as err:
                report.skipped.append([e.relative, str(err), False])
    return report


def _drop_to_sandbox_user(caps: str = "") -> list[str]:
    """setpriv to the sandbox user with no capabilities (but ``caps``, kept for staging) and ``no_new_privs``."""
    keep = f",{caps}" if caps else ""
    return ["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups",
            f"--inh-caps=-all{keep}", f"--bounding-set=-all{keep}", *([f"--ambient-caps={caps}"] if caps else []),
            "--no-new-privs", "--"]


def _reachable(path: Path) -> bool:
    """Whether the sandbox user (uid and gid 65534, no other group) may pass through every folder above
    ``path`` and read ``path`` itself, by their modes."""
    return all(_allows(p, 0o1) for p in Path(path).parents) and _allows(Path(path), 0o5)


def _allows(path: Path, need: int) -> bool:
    """Whether ``path``'s mode gives the sandbox user (uid and gid 65534) ``need`` (0o1: pass, 0o5: read)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    shift = 6 if st.st_uid == SANDBOX_UID else 3 if st.st_gid == SANDBOX_UID else 0
    return st.st_mode & (need << shift) == need << shift


def _passable(folder: Path) -> bool:
    """Whether the sandbox user may pass through ``folder`` and every folder above it."""
    return all(_allows(p, 0o1) for p in (Path(folder), *Path(folder).parents))


def sandbox_user_reaches(path: Path) -> bool:
    """Whether the sandbox user could reach ``path``, or, where it does not exist yet, the nearest folder above it
    (folders the grader makes there are open to others unless its umask says otherwise)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return _reachable(path)


def _open_to_sandbox_group(folder: Path) -> None:
    """Let the sandbox user's group pass through ``folder`` (a run's scratch folder the grader made: no link),
    without listing it: group 65534, mode 0710."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise SandboxFailed(f"{folder} is not the grader's folder (uid {st.st_uid})")
        os.fchown(fd, -1, SANDBOX_UID)
        os.fchmod(fd, (st.st_mode & 0o700) | 0o010)
    finally:
        os.close(fd)


def _give_tree(top: Path, uid: int) -> None:
    """Make what the grader just copied into ``top`` (folders and regular files, no link) ``uid``'s, never
    following a link."""
    for folder, dirs, files in os.walk(top, followlinks=False):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, uid, follow_symlinks=False)


def _tasks_of_uid(uid: int) -> int:
    """Processes and threads the uid runs now (RLIMIT_NPROC counts them all)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count


def _python_paths() -> list[str]:
    """The Python installation and environment, read-only inside (the grader package masked): the prefixes,
    and any package folder (site-packages, dist-packages) on ``sys.path`` outside them, such as one a
    ``.pth`` file adds.  Never other folders of ``sys.path``: a checkout there holds reports and secrets."""
    prefixes = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    extra = {os.path.realpath(p) for p in sys.path
             if p and os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages") and os.path.isdir(p)}
    paths = prefixes | {p for p in extra if not any(p.startswith(q.rstrip("/") + "/") for q in prefixes)}
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
