"""The grading secret behind the seeds: a seed a student sees is no cheap oracle for a guessed secret.

A notebook can print its kernel's ``PYTHONHASHSEED`` and, before, could recompute it from a guessed secret
with a few SHA-256s (issue 26, finding 6).  Now every seed comes from the secret stretched by scrypt and
then by HMAC per purpose; a short or guessable ``GRADER_SECRET`` is warned about.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import textwrap

import nbformat
import pytest

from conftest import ROOT, TUTORIAL6
from grader.evaluate import heldout
from grader.evaluate.heldout import dataset_seeds, grading_key, keyed_seed, purpose_key, secret_weakness

#: a TA-chosen, readable secret of the kind the hostile review guessed
READABLE = "keras grading secret 2026"

#: the hostile notebook's guess loop: the seed derivation the grader used before (SHA-256 of the secret, the
#: assignment and each dataset; then of those seeds, the submission's files and the notebook's name), and the
#: same chain on the secret's plain SHA-256 in place of a stretched key, for ~1,000 readable guesses
GUESS_LOOP = textwrap.dedent('''
    import hashlib, hmac, json, os

    def _old_seed(guess, assignment, datasets, files, name):
        seeds = {d: int.from_bytes(hashlib.sha256(":".join((guess, assignment, "heldout", d)).encode())
                                   .digest()[:8], "little") for d in datasets}
        h = hashlib.sha256(json.dumps(sorted(seeds.items())).encode())
        for rel, data in sorted(files.items()):
            h.update(f"{rel}\\0{hashlib.sha256(data).hexdigest()}\\0".encode())
        h.update(name.encode())
        return int.from_bytes(h.digest()[:4], "little") % 2**31

    def _unstretched_seed(guess, files, name):
        key = hmac.new(hashlib.sha256(guess.encode()).digest(), b"runs", hashlib.sha256).digest()
        mac = hmac.new(key, json.dumps(sorted((r, hashlib.sha256(d).hexdigest()) for r, d in files.items())
                                       + [name]).encode(), hashlib.sha256)
        return int.from_bytes(mac.digest()[:8], "little") % 2**31

    def guess_secret(seed, assignment, datasets, files, name):
        words = ["keras", "course", "grading", "secret", "tutorial", "neural", "spring", "autumn", "class", "ta"]
        guesses = [f"{a} {b} {c} {y}" for a in words for b in words for c in words[:5] for y in (2025, 2026)]
        for guess in guesses:
            if seed in (_old_seed(guess, assignment, datasets, files, name), _unstretched_seed(guess, files, name)):
                return guess, len(guesses)
        return None, len(guesses)
''')


def _submission(tmp_path, source="print('hello')"):
    from grader.intake import collect_one
    from grader.spec import load_assignment

    folder = tmp_path / "s"
    folder.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]), folder / "work.ipynb")
    assignment = load_assignment(TUTORIAL6)
    sub = collect_one(folder, assignment, "s")
    return assignment, sub, next(f for f in sub.files if f.relative == "work.ipynb")


def _loop() -> dict:
    """The guess loop's functions, run here as the notebook runs them."""
    scope: dict = {}
    exec(GUESS_LOOP, scope)
    return scope


def _guess_loop():
    return _loop()["guess_secret"]


def _old_derivation(assignment, secret, files, name):
    """The kernel seed as the grader derived it before: nothing but SHA-256 of the secret (the reproduction)."""
    return _loop()["_old_seed"](secret, assignment.id, list(assignment.datasets), files, name)


def test_the_hostile_guess_loop_finds_a_readable_secret_from_the_old_seed(tmp_path):
    """The attack is real: given the seed the old derivation made, the loop finds the TA's phrase."""
    assignment, _, file = _submission(tmp_path)
    files = {"work.ipynb": (tmp_path / "s" / "work.ipynb").read_bytes()}
    old = _old_derivation(assignment, READABLE, files, "work.ipynb")
    found, tried = _guess_loop()(old, assignment.id, list(assignment.datasets), files, "work.ipynb")
    assert found == READABLE and tried == 1000


def test_no_cheap_guess_loop_checks_a_kernel_seed(tmp_path):
    from grader.measure.student import run_seed

    assignment, sub, file = _submission(tmp_path)
    files = {"work.ipynb": (tmp_path / "s" / "work.ipynb").read_bytes()}
    seed = run_seed(dataset_seeds(assignment, READABLE), sub, file)
    assert 0 <= seed < 2**31
    assert seed != _old_derivation(assignment, READABLE, files, "work.ipynb")
    found, _ = _guess_loop()(seed, assignment.id, list(assignment.datasets), files, "work.ipynb")
    assert found is None


def _seeds_from_key(assignment, key: bytes) -> dict:
    """``dataset_seeds`` as it would be with ``key`` in place of the stretched secret."""
    seeds = {name: keyed_seed(purpose_key(key, "heldout"), name) for name in assignment.datasets}
    seeds[heldout.RUNS] = int.from_bytes(purpose_key(key, "runs"), "big")
    return seeds


def test_every_seed_costs_scrypt_at_the_stated_cost(tmp_path):
    """Checking one guess costs scrypt with N=2^16, r=8 (64 MiB): the seeds equal what that KDF gives and
    nothing a cheaper key (plain SHA-256, the raw secret, scrypt at a lower cost) gives."""
    from grader.measure.student import run_seed

    assert heldout.KDF["n"] >= 2**16 and heldout.KDF["r"] >= 8 and heldout.KDF["p"] >= 1
    assert 128 * heldout.KDF["n"] * heldout.KDF["r"] >= 64 * 2**20  # scrypt's memory per guess
    assignment, sub, file = _submission(tmp_path)
    salt = b"grader/grading-secret/v2\0" + assignment.id.encode()
    stretched = hashlib.scrypt(READABLE.encode(), salt=salt, n=2**16, r=8, p=1, maxmem=2**27, dklen=32)
    assert grading_key(READABLE, assignment.id) == stretched
    seeds = dataset_seeds(assignment, READABLE)
    assert seeds == _seeds_from_key(assignment, stretched)
    assert run_seed(seeds, sub, file) == run_seed(_seeds_from_key(assignment, stretched), sub, file)
    cheap_keys = [hashlib.sha256(READABLE.encode()).digest(), READABLE.encode(),
                  hashlib.scrypt(READABLE.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32),
                  hashlib.pbkdf2_hmac("sha256", READABLE.encode(), salt, 1, 32)]
    for key in cheap_keys:
        cheap = _seeds_from_key(assignment, key)
        assert run_seed(cheap, sub, file) != run_seed(seeds, sub, file)
        assert not set(cheap.values()) & set(seeds.values())


def test_seeds_are_deterministic_separated_and_never_the_key(tmp_path):
    from grader.evaluate import retrain
    from grader.measure.student import run_seed

    assignment, sub, file = _submission(tmp_path)
    seeds = dataset_seeds(assignment, READABLE)
    assert seeds == dataset_seeds(assignment, READABLE)  # same secret, same draws: the same grade
    assert set(seeds) == set(assignment.datasets) | {heldout.RUNS}
    other = dataset_seeds(assignment, READABLE + "!")
    assert not set(other.values()) & set(seeds.values())
    assert run_seed(seeds, sub, file) == run_seed(dict(seeds), sub, file)
    assert run_seed(seeds, sub, file) != run_seed(other, sub, file)
    key = grading_key(READABLE, assignment.id)
    shown = json.dumps(seeds)
    assert key.hex() not in shown and str(int.from_bytes(key, "big")) not in shown
    assert str(int.from_bytes(key, "little")) not in shown
    # the kernels', the re-trainings' and the held-out seeds come from keys of their own
    keys = {heldout.run_key(seeds, "kernel"), heldout.run_key(seeds, "retrain"), purpose_key(key, "heldout"), key}
    assert len(keys) == 4
    import numpy as np

    recipe = {"x": np.zeros((3, 2)), "y": np.zeros(3)}
    assert retrain.retrain_seed(seeds, {"epochs": 1}, recipe, [], 0) != run_seed(seeds, sub, file)
    assert retrain.retrain_seed(seeds, {"epochs": 1}, recipe, [], 0) == \
        retrain.retrain_seed(dict(seeds), {"epochs": 1}, recipe, [], 0)


def test_a_short_or_guessable_secret_is_weak_and_a_generated_one_is_not():
    assert "characters" in secret_weakness("test-secret")
    assert "guesses" in secret_weakness("passwordpassword1234")
    assert "guesses" in secret_weakness("a" * 64)
    assert secret_weakness(secrets.token_hex(32)) is None  # what the grader and the bundle generate
    assert secret_weakness(secrets.token_urlsafe(32)) is None


def _grade(tmp_path, env_secret=None):
    env = {k: v for k, v in os.environ.items() if k != "GRADER_SECRET"}
    if env_secret is not None:
        env["GRADER_SECRET"] = env_secret
    # a submissions folder that does not exist: the batch refuses at once, after the secret was looked at
    return subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(tmp_path / "none"), "-a", str(TUTORIAL6),
                           "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


@pytest.mark.parametrize("weak", ["test-secret", "passwordpassword1234"])
def test_grading_with_a_weak_grader_secret_warns_loudly(tmp_path, weak):
    run = _grade(tmp_path, weak)
    assert "WARNING: the grading secret from the GRADER_SECRET environment variable is easy to guess" in run.stderr
    assert "token_hex" in run.stderr


def test_a_weak_secret_file_is_warned_about_and_a_generated_secret_is_not(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".grader-secret").write_text("our secret\n")
    run = _grade(tmp_path)
    assert "WARNING: the grading secret from" in run.stderr and ".grader-secret is easy to guess" in run.stderr
    (tmp_path / "out" / ".grader-secret").write_text(secrets.token_hex(32) + "\n")
    assert "WARNING" not in _grade(tmp_path).stderr
    assert "WARNING" not in _grade(tmp_path, secrets.token_hex(32)).stderr


@pytest.mark.slow
def test_a_sandboxed_notebook_cannot_find_the_secret_from_its_seed(tmp_path):
    """The hostile notebook of the review: it reads its PYTHONHASHSEED and its own files, runs ~1,000 readable
    guesses through every cheap derivation, and puts what it found where a student sees it (an error)."""
    from grader.execute import execute_notebook
    from grader.execute.sandbox import bwrap_path
    from grader.harvest import Harvester
    from grader.measure.student import run_seed

    if not bwrap_path():
        pytest.skip("bubblewrap is not installed (.ci/run installs it)")
    from grader.spec import load_assignment

    assignment = load_assignment(TUTORIAL6)
    attack = GUESS_LOOP + textwrap.dedent(f'''
        seed = int(os.environ["PYTHONHASHSEED"])
        files = {{"work.ipynb": open("work.ipynb", "rb").read()}}
        found, tried = guess_secret(seed, {assignment.id!r}, {list(assignment.datasets)!r}, files, "work.ipynb")
        raise RuntimeError(f"SEED={{seed}} TRIED={{tried}} FOUND={{found}}")
    ''')
    assignment, sub, file = _submission(tmp_path, attack)
    seed = run_seed(dataset_seeds(assignment, READABLE), sub, file)
    with execute_notebook(assignment, file, sub.root, harvester=Harvester(assignment), seed=seed) as ex:
        assert ex.run.sandboxed
        said = " ".join(f["explanation"] for f in ex.failures)
    assert f"SEED={seed} TRIED=1000 FOUND=None" in said, said
    files = {"work.ipynb": (tmp_path / "s" / "work.ipynb").read_bytes()}
    old = _old_derivation(assignment, READABLE, files, "work.ipynb")  # the old seed: the same loop finds it
    assert _guess_loop()(old, assignment.id, list(assignment.datasets), files, "work.ipynb")[0] == READABLE


def test_the_secret_check_of_gradescope_build_says_nothing_without_a_secret_and_warns_of_a_weak_one(capsys):
    """`gradescope build` checks GRADER_SECRET alone (no output folder): none set means a new random one."""
    from grader.cli import _warn_if_weak_secret

    _warn_if_weak_secret(None, None)
    assert "WARNING" not in capsys.readouterr().err
    _warn_if_weak_secret(None, "short")
    assert "easy to guess: it has 5 characters" in " ".join(capsys.readouterr().err.split())
