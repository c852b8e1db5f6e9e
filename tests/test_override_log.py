"""The signed override log that carries a class's TA overrides past a lost gradebook (``grader.ci.overrides``):
read only when signed with the grading secret for that assignment, brought level with a real gradebook in
either direction, refused (nothing changed) when the two disagree.  And the seal of the gradebook folder CI
restores from the Actions cache (``grader.ci.seal``): trusted only as the workflow sealed it."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TUTORIAL6
from grader.ci.overrides import log_text, read_log, sync_log
from grader.ci.seal import SEAL, seal, verify
from grader.errors import FatalError
from grader.spec import load_assignment
from grader.store import Gradebook

SECRET = "override-log-secret-" + "9c1f" * 8


def row(student: str, points: float | None, at: str, reason: str = "looked at it") -> dict:
    return {"student": student, "task": "1c", "action": "set" if points is not None else "undo", "points": points,
            "replaced_score": 0.0, "replaced_status": "missing", "reason": reason, "by": "ta", "at": at}


@pytest.fixture
def gradebook(tmp_path):
    """A real gradebook of tutorial6 (a run begun: its assignment and tasks are known), no student graded yet."""
    book = Gradebook(out_dir=tmp_path)
    book.begin_run(load_assignment(TUTORIAL6), "local")
    yield book
    book.close()


def test_a_log_puts_back_what_a_new_gradebook_lacks_and_keeps_what_it_adds(gradebook, tmp_path):
    log = tmp_path / "overrides.json"
    first, second = row("erin", 3.0, "2026-12-01T10:00:00+00:00"), row("erin", None, "2026-12-02T10:00:00+00:00", "")
    log.write_text(log_text("tutorial6", [first, second], SECRET))
    done = sync_log(gradebook, "tutorial6", log, SECRET)
    assert done.put_back == [first, second] and done.logged == 0 and done.had_log
    assert gradebook.override_log("tutorial6") == [first, second]  # as they were: who, when, why
    third = row("bob", 5.0, "2026-12-03T10:00:00+00:00")
    gradebook.append_overrides("tutorial6", [third])
    done = sync_log(gradebook, "tutorial6", log, SECRET)
    assert done.put_back == [] and done.logged == 1 and read_log(log, "tutorial6", SECRET) == [first, second, third]


def test_a_gradebook_without_a_log_starts_one(gradebook, tmp_path):
    log = tmp_path / "new" / "overrides.json"
    done = sync_log(gradebook, "tutorial6", log, SECRET)
    assert not done.had_log and done.total == 0 and read_log(log, "tutorial6", SECRET) == []


@pytest.mark.parametrize("tamper", ["points", "reorder", "mac", "other secret", "other class", "not json"])
def test_a_log_changed_without_the_secret_is_refused_and_nothing_changes(gradebook, tmp_path, tamper):
    log = tmp_path / "overrides.json"
    rows = [row("erin", 3.0, "2026-12-01T10:00:00+00:00"), row("bob", 1.0, "2026-12-02T10:00:00+00:00")]
    doc = json.loads(log_text("tutorial6", rows, SECRET))
    if tamper == "points":
        doc["overrides"][0]["points"] = 10.0
    elif tamper == "reorder":
        doc["overrides"].reverse()
    elif tamper == "mac":
        doc["hmac_sha256"] = "0" * 64
    elif tamper == "other secret":
        doc = json.loads(log_text("tutorial6", rows, SECRET + "x"))
    elif tamper == "other class":
        doc = json.loads(log_text("tutorial7", rows, SECRET))
    text = "{not json" if tamper == "not json" else json.dumps(doc)
    log.write_text(text)
    with pytest.raises(FatalError, match="is refused"):
        sync_log(gradebook, "tutorial6", log, SECRET)
    assert gradebook.override_log("tutorial6") == [] and log.read_text() == text


def test_a_link_in_place_of_the_log_is_not_followed(gradebook, tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text(log_text("tutorial6", [row("erin", 3.0, "2026-12-01T10:00:00+00:00")], SECRET))
    (tmp_path / "overrides.json").symlink_to(target)
    with pytest.raises(FatalError, match="not a regular file"):
        sync_log(gradebook, "tutorial6", tmp_path / "overrides.json", SECRET)
    assert gradebook.override_log("tutorial6") == []


def test_a_log_and_a_gradebook_that_disagree_are_both_left_as_they_are(gradebook, tmp_path):
    log = tmp_path / "overrides.json"
    text = log_text("tutorial6", [row("erin", 3.0, "2026-12-01T10:00:00+00:00")], SECRET)
    log.write_text(text)
    gradebook.append_overrides("tutorial6", [row("erin", 4.0, "2026-12-01T11:00:00+00:00")])
    with pytest.raises(FatalError, match="disagree from their override 1") as e:
        sync_log(gradebook, "tutorial6", log, SECRET)
    assert "delete the log" in e.value.explain()
    assert log.read_text() == text and [r["points"] for r in gradebook.override_log("tutorial6")] == [4.0]


def test_a_deeply_nested_log_is_refused_with_a_message_not_a_traceback(gradebook, tmp_path):
    """A student who can push puts 200 KB of brackets on the branch: json's parser would recurse past Python's
    limit (RecursionError, an internal error with a traceback); the log is refused like any other non-log."""
    log = tmp_path / "overrides.json"
    log.write_text('{"overrides": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(FatalError, match="is refused: it is not a grader-override-log/1 file"):
        sync_log(gradebook, "tutorial6", log, SECRET)
    assert gradebook.override_log("tutorial6") == []


@pytest.fixture
def sealed(gradebook, tmp_path):
    """The folder of a real gradebook with a page beside it, sealed as a CI run leaves it for the cache."""
    (tmp_path / "students").mkdir()
    (tmp_path / "students" / "erin.html").write_text("<p>erin: 3 of 10</p>")
    gradebook.append_overrides("tutorial6", [row("erin", 3.0, "2026-12-01T10:00:00+00:00")])
    gradebook.close()
    assert seal(tmp_path, SECRET) >= 3
    verify(tmp_path, SECRET)  # as sealed: trusted
    return tmp_path


def test_a_gradebook_changed_after_its_seal_is_refused(sealed):
    """Someone who can write the cache gives erin 10 points in the gradebook itself (real SQLite)."""
    import sqlite3

    with sqlite3.connect(sealed / "gradebook.sqlite") as db:
        assert db.execute("UPDATE overrides SET points = 10").rowcount == 1
    with pytest.raises(FatalError, match="gradebook.sqlite was changed after it was sealed"):
        verify(sealed, SECRET)


def test_a_page_added_to_a_sealed_gradebook_is_refused(sealed):
    (sealed / "students" / "mallory.html").write_text("<script>steal()</script>")
    with pytest.raises(FatalError, match="students/mallory.html was added after it was sealed"):
        verify(sealed, SECRET)


def test_a_link_put_in_place_of_a_sealed_page_is_refused(sealed):
    (sealed / "students" / "erin.html").unlink()
    (sealed / "students" / "erin.html").symlink_to("/etc/passwd")
    with pytest.raises(FatalError, match="students/erin.html was changed after it was sealed"):
        verify(sealed, SECRET)


def test_a_gradebook_resealed_without_the_secret_is_refused(sealed):
    """The forger edits the gradebook and seals it again, with a secret of her own (she has not the TA's)."""
    (sealed / "students" / "erin.html").write_text("<p>erin: 10 of 10</p>")
    seal(sealed, "the-students-own-guess")
    with pytest.raises(FatalError, match="not made with this GRADER_SECRET"):
        verify(sealed, SECRET)


def test_a_gradebook_without_a_seal_is_refused(sealed):
    """An entry saved by a job that never sealed it (or by the workflow before it sealed gradebooks)."""
    (sealed / SEAL).unlink()
    with pytest.raises(FatalError, match="carries no seal"):
        verify(sealed, SECRET)


def test_a_seal_of_nested_brackets_is_refused_with_a_message(sealed):
    (sealed / SEAL).write_text('{"files": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(FatalError, match="is not a grader-ci-seal/1 file"):
        verify(sealed, SECRET)


# --- the seal's walk is bounded: a planted file is refused before anything is hashed ----------------------------

def _bytes_read() -> int:
    """What this process has read so far (``rchar`` of /proc/self/io: every read(2), sparse zeros included)."""
    for line in open("/proc/self/io", encoding="ascii"):
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("/proc/self/io has no rchar")


def _sparse(path, size: int):
    with open(path, "wb") as f:
        f.truncate(size)  # no block written: the disk is not filled, a reader still reads `size` bytes


def _refused_unread(folder, match: str, secret: str = SECRET) -> str:
    before = _bytes_read()
    with pytest.raises(FatalError, match=match) as e:
        verify(folder, secret)
    assert _bytes_read() - before < 64 * 2**20, "the planted file was read"
    return e.value.message


def test_an_honest_gradebook_sealed_and_verified_by_the_workflows_command(sealed):
    """The workflow's own commands (``python -P -m grader.ci.seal seal|verify``) on a real gradebook: the seal
    matches, and the page read from it after is the one sealed."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "GRADER_SECRET": SECRET}
    done = subprocess.run([sys.executable, "-P", "-m", "grader.ci.seal", "seal", str(sealed)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("sealed "), done.stdout + done.stderr
    done = subprocess.run([sys.executable, "-P", "-m", "grader.ci.seal", "verify", str(sealed)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("its seal matches"), done.stdout + done.stderr


def test_a_huge_sparse_file_planted_in_a_sealed_gradebook_is_refused_unread(sealed):
    """A poisoned cache entry keeps an honest seal and adds a 100 GB file of holes: verify used to hash every
    byte of it (minutes, and as much again for each such file) before saying it was added.  Its size alone
    refuses it, in words, and the workflow's verify step exits 1 with that line."""
    _sparse(sealed / "students" / "zz-padding.bin", 100 * 2**30)
    said = _refused_unread(sealed, r"students/zz-padding.bin is 100.0 GB, more than the 2.0 GB a file of a "
                                   r"sealed gradebook may be \(nothing was read\)")
    assert "\n" not in said
    done = subprocess.run([sys.executable, "-P", "-m", "grader.ci.seal", "verify", str(sealed)], capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                                       "GRADER_SECRET": SECRET})
    assert done.returncode == 1 and done.stdout == said + "\n", done.stdout + done.stderr


def test_a_sealed_gradebook_swapped_for_a_huge_one_of_the_same_name_is_refused_unread(sealed):
    """The file the seal names (gradebook.sqlite) replaced by a 3 GB one: refused by its size, not hashed."""
    (sealed / "gradebook.sqlite").unlink()
    _sparse(sealed / "gradebook.sqlite", 3 * 2**30)
    _refused_unread(sealed, r"gradebook.sqlite is 3.0 GB, more than the 2.0 GB")


def test_files_each_below_the_limit_but_too_many_bytes_together_are_refused_unread(sealed):
    for n in range(3):
        _sparse(sealed / f"plot-{n}.png", 1900 * 2**20)
    _refused_unread(sealed, r"its files are more than 4.0 GB in all, more than a sealed gradebook may hold")


def test_a_link_planted_in_a_sealed_gradebook_is_not_followed(sealed, tmp_path_factory):
    """A link to a huge file outside the folder (and one to /dev/zero, which never ends): neither is opened;
    each is named as added, and nothing of its target is read."""
    outside = tmp_path_factory.mktemp("outside") / "huge.bin"
    _sparse(outside, 100 * 2**30)
    (sealed / "students" / "bob.html").symlink_to(outside)
    (sealed / "students" / "zero.html").symlink_to("/dev/zero")
    _refused_unread(sealed, r"students/bob.html was added, students/zero.html was added after it was sealed")


def test_a_fifo_planted_in_a_sealed_gradebook_is_refused_without_hanging(sealed):
    """A named pipe no one writes to: opening it to hash it would wait for ever."""
    os.mkfifo(sealed / "students" / "pipe.html")
    _refused_unread(sealed, r"students/pipe.html was added after it was sealed")


def test_a_gradebook_of_too_many_entries_is_refused_before_any_is_hashed(sealed, monkeypatch):
    """The entries' bound, stated low for the test (100 000 files would only be slow): past it, refused."""
    from grader.ci import seal as seal_module

    monkeypatch.setattr(seal_module, "MAX_ENTRIES", 40)
    for n in range(40):
        (sealed / "students" / f"s{n}.html").write_text("x")
    _refused_unread(sealed, r"it holds more than 40 files and folders, more than a sealed gradebook may")


def test_a_gradebook_too_large_to_seal_is_not_sealed_and_the_old_seal_goes(sealed):
    """The seal step meets a planted huge file: it seals nothing (it would have hashed it all), removes the
    seal the folder carried, and says why in a GitHub error; the next run's verify then trusts nothing."""
    _sparse(sealed / "students" / "zz-padding.bin", 100 * 2**30)
    before = _bytes_read()
    done = subprocess.run([sys.executable, "-P", "-m", "grader.ci.seal", "seal", str(sealed)], capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                                       "GRADER_SECRET": SECRET})
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith(f"::error::{sealed} was not sealed: students/zz-padding.bin is 100.0 GB")
    assert "grades every student again" in done.stdout
    assert not (sealed / SEAL).exists()
    with pytest.raises(FatalError, match="carries no seal"):
        verify(sealed, SECRET)
    assert _bytes_read() - before < 64 * 2**20  # (the child's reads are its own; this is verify's)
