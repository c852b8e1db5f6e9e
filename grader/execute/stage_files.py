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


def main(source, dest, max_files, max_bytes, max_depth):
    state = {"copied": 0, "bytes": 0, "skipped": []}
    over = {"files": 0, "bytes": 0}  # files left out by a bound: said once, at the end

    def skip(rel, why, special=False):
        if len(state["skipped"]) < 200:
            state["skipped"].append([rel, why, special])

    def copy(name, sfd, dfd, rel, size):
        if state["copied"] >= max_files:
            over["files"] += 1
            return
        if state["bytes"] + size > max_bytes:
            over["bytes"] += 1
            return
        try:
            src = os.open(name, FILE, dir_fd=sfd)
        except OSError as e:
            return skip(rel, f"cannot be read ({e.strerror})")
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                return skip(rel, kind(st.st_mode), True)
            os.set_blocking(src, True)
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                          dir_fd=dfd)
            try:
                left = max_bytes - state["bytes"]
                while True:
                    block = os.read(src, 1 << 20)
                    if not block:
                        break
                    if len(block) > left:
                        raise OSError(27, "grew past the submission's size limit while it was copied")
                    os.write(out, block)
                    left -= len(block)
                    state["bytes"] += len(block)
            finally:
                os.close(out)
            state["copied"] += 1
        except OSError as e:
            skip(rel, f"not copied ({e.strerror})")
        finally:
            os.close(src)

    def walk(sfd, dfd, prefix, depth):
        try:
            with os.scandir(sfd) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            return skip(prefix or ".", f"cannot be read ({e.strerror})")
        for entry in entries:
            name, rel = entry.name, prefix + entry.name
            if name.startswith(".") or name in SKIP_NAMES:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                skip(rel, f"cannot be read ({e.strerror})")
                continue
            if stat.S_ISDIR(st.st_mode):
                if depth >= max_depth:
                    skip(rel + "/", f"nested more than {max_depth} folders deep; not copied")
                    continue
                try:
                    os.mkdir(name, 0o755, dir_fd=dfd)
                    sub_s, sub_d = os.open(name, DIR, dir_fd=sfd), os.open(name, DIR, dir_fd=dfd)
                except OSError as e:
                    skip(rel + "/", f"not copied ({e.strerror})")
                    continue
                try:
                    walk(sub_s, sub_d, rel + "/", depth + 1)
                finally:
                    os.close(sub_s)
                    os.close(sub_d)
            elif stat.S_ISREG(st.st_mode):
                copy(name, sfd, dfd, rel, st.st_size)
            else:
                skip(rel, kind(st.st_mode), True)

    sfd, dfd = os.open(source, DIR), os.open(dest, DIR)
    walk(sfd, dfd, "", 1)
    if over["files"]:
        skip(".", f"{over['files']} file(s) beyond the first {max_files} were not copied")
    if over["bytes"]:
        skip(".", f"{over['bytes']} file(s) were not copied: the files together would exceed "
                  f"{max_bytes // 2**20} MB")
    sys.stdout.write(json.dumps(state) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
