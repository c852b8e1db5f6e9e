# Runs INSIDE the sandbox (standard library only, `python -I -S`), before any student code: copies the
# submission, bound read-only at SOURCE, into the work folder DEST.  It runs as the sandbox user, so a
# link in the submission can only point into the sandbox's own view (which holds no secret), and it
# copies regular files only: links are never followed, pipes, sockets and devices never opened.
# Bounded in files, bytes and depth.  Prints one JSON line: {"copied", "bytes", "skipped": [[path, why, special]]}
# (special: a link, pipe, socket or device, which intake has already named).
import json
import os
import stat
import sys

SKIP_NAMES = {"__MACOSX", ".ipynb_checkpoints", "__pycache__", ".DS_Store", "Thumbs.db", ".git"}
DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def kind(mode):
    if stat.S_ISLNK(mode):
        return "a symbolic link (links are never followed)"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


class Copier:
    """Copies a tree within the bounds, saying what it left out (``skipped``)."""

    def __init__(self, max_files, max_bytes, max_depth):
        self.max_files, self.max_bytes, self.max_depth = max_files, max_bytes, max_depth
        self.state = {"copied": 0, "bytes": 0, "skipped": []}
        self.over = {"files": 0, "bytes": 0}  # files left out by a bound: said once, at the end

    def skip(self, rel, why, special=False):
        if len(self.state["skipped"]) < 200:
            self.state["skipped"].append([rel, why, special])

    def copy(self, name, sfd, dfd, rel, size):
        state = self.state
        if state["copied"] >= self.max_files:
            self.over["files"] += 1
            return
        if state["bytes"] + size > self.max_bytes:
            self.over["bytes"] += 1
            return
        try:
            src = os.open(name, FILE, dir_fd=sfd)
        except OSError as e:
            return self.skip(rel, f"cannot be read ({e.strerror})")
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                return self.skip(rel, kind(st.st_mode), True)
            os.set_blocking(src, True)
            self.write(src, name, dfd)
            state["copied"] += 1
        except OSError as e:
            self.skip(rel, f"not copied ({e.strerror})")
        finally:
            os.close(src)

    def write(self, src, name, dfd):
        """Copy the open file ``src`` to a new file ``name`` in ``dfd``, within the bytes left."""
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
        try:
            left = self.max_bytes - self.state["bytes"]
            while True:
                block = os.read(src, 1 << 20)
                if not block:
                    break
                if len(block) > left:
                    raise OSError(27, "grew past the submission's size limit while it was copied")
                os.write(out, block)
                left -= len(block)
                self.state["bytes"] += len(block)
        finally:
            os.close(out)

    def walk(self, sfd, dfd, prefix, depth):
        try:
            with os.scandir(sfd) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            return self.skip(prefix or ".", f"cannot be read ({e.strerror})")
        for entry in entries:
            name, rel = entry.name, prefix + entry.name
            if name.startswith(".") or name in SKIP_NAMES:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                self.skip(rel, f"cannot be read ({e.strerror})")
                continue
            if stat.S_ISDIR(st.st_mode):
                self.folder(name, sfd, dfd, rel, depth)
            elif stat.S_ISREG(st.st_mode):
                self.copy(name, sfd, dfd, rel, st.st_size)
            else:
                self.skip(rel, kind(st.st_mode), True)

    def folder(self, name, sfd, dfd, rel, depth):
        if depth >= self.max_depth:
            return self.skip(rel + "/", f"nested more than {self.max_depth} folders deep; not copied")
        try:
            os.mkdir(name, 0o755, dir_fd=dfd)
            sub_s, sub_d = os.open(name, DIR, dir_fd=sfd), os.open(name, DIR, dir_fd=dfd)
        except OSError as e:
            return self.skip(rel + "/", f"not copied ({e.strerror})")
        try:
            self.walk(sub_s, sub_d, rel + "/", depth + 1)
        finally:
            os.close(sub_s)
            os.close(sub_d)


def main(source, dest, max_files, max_bytes, max_depth):
    copier = Copier(max_files, max_bytes, max_depth)
    sfd, dfd = os.open(source, DIR), os.open(dest, DIR)
    copier.walk(sfd, dfd, "", 1)
    if copier.over["files"]:
        copier.skip(".", f"{copier.over['files']} file(s) beyond the first {max_files} were not copied")
    if copier.over["bytes"]:
        copier.skip(".", f"{copier.over['bytes']} file(s) were not copied: the files together would exceed "
                         f"{max_bytes // 2**20} MB")
    sys.stdout.write(json.dumps(copier.state) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
