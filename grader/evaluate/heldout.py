"""Held-out data: made by the grader from a secret, never seen by students.

The secret comes from ``GRADER_SECRET`` or from a file the grader keeps in its
output folder.  It is stretched once per process and assignment with scrypt
(``KDF``: 64 MiB, about 0.2 s), and every seed comes from that key by HMAC
with its own purpose: the held-out seeds (one per dataset, for the evaluation
worker alone) and the key of the kernels' and re-trainings' seeds (``RUNS``).
A seed a student can see (``PYTHONHASHSEED``) is a truncated HMAC: it never
shows the key, and checking one guessed secret against it costs the whole KDF.
``secret_weakness`` says when a TA-chosen secret is short or guessable.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import math
import os
import secrets as _secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..spec import Assignment, Dataset, import_reference
from ..spec.tables import read_labelled_csv

SECRET_ENV = "GRADER_SECRET"
SECRET_FILE = ".grader-secret"


@dataclass(frozen=True)
class Secret:
    value: str
    origin: str  # "environment", "created <path>", "<path>"
    created: bool = False


def resolve_secret(out_dir: Path, *, create: bool = True) -> Secret | None:
    """The grading secret: ``$GRADER_SECRET``, else ``out_dir/.grader-secret`` (created once, unless
    ``create`` is False: then None when there is none yet)."""
    env = os.environ.get(SECRET_ENV)
    if env:
        return Secret(env, f"the {SECRET_ENV} environment variable")
    path = Path(out_dir) / SECRET_FILE
    try:
        if path.is_file():
            value = path.read_text().strip()
            if value:
                return Secret(value, str(path))
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        value = _secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
    except OSError as e:
        raise OutputError(f"cannot keep the grading secret in {path}: {e.strerror or e}") from None
    return Secret(value, str(path), created=True)


#: scrypt's cost (RFC 7914): N * r * 128 bytes = 64 MiB of memory and about 0.2 s, once per process and
#: assignment, for the grader and for every guess an attacker checks against a seed
KDF = {"n": 2**16, "r": 8, "p": 1}
KDF_SALT = b"grader/grading-secret/v2\0"  # with the assignment id: one stretched key per assignment
#: the entry of ``dataset_seeds`` that keys the kernels' and re-trainings' seeds (no dataset has this name)
RUNS = "~runs"
#: a TA-chosen secret shorter than this, or estimated below ``MIN_SECRET_BITS``, is warned about
MIN_SECRET_CHARS, MIN_SECRET_BITS = 16, 64


@functools.lru_cache(maxsize=8)
def grading_key(secret: str, assignment_id: str) -> bytes:
    """The secret stretched with scrypt (``KDF``) for one assignment: the root of every seed, never shown."""
    return hashlib.scrypt(secret.encode("utf-8", "surrogatepass"), salt=KDF_SALT + assignment_id.encode(),
                          dklen=32, maxmem=2 * 128 * KDF["n"] * KDF["r"], **KDF)


def purpose_key(key: bytes, purpose: str) -> bytes:
    """A key of its own for one purpose (HMAC-SHA256 of the purpose): what one purpose's seeds show says
    nothing about another's."""
    return hmac.new(key, b"grader-purpose\0" + purpose.encode(), hashlib.sha256).digest()


def keyed_seed(key: bytes, *parts: str | bytes, bits: int = 64) -> int:
    """A seed of ``bits`` bits: HMAC-SHA256 under ``key`` of ``parts`` (each length-prefixed), truncated."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        mac.update(len(data).to_bytes(8, "little") + data)
    return int.from_bytes(mac.digest()[:8], "little") % 2**bits


def dataset_seeds(assignment: Assignment, secret: str) -> dict[str, int]:
    """One held-out seed per dataset and, under ``RUNS``, the key (a 256-bit number) of the seeds of
    notebooks and re-trainings (``run_key``)."""
    key = grading_key(secret, assignment.id)
    heldout = purpose_key(key, "heldout")
    seeds = {name: keyed_seed(heldout, name) for name in assignment.datasets}
    seeds[RUNS] = int.from_bytes(purpose_key(key, "runs"), "big")
    return seeds


def run_key(seeds: dict, purpose: str) -> bytes:
    """The key of one kind of run's seeds (``"kernel"``, ``"retrain"``) from ``dataset_seeds``' ``RUNS``."""
    return purpose_key(int(seeds[RUNS]).to_bytes(32, "big"), purpose)


def secret_weakness(secret: str) -> str | None:
    """Why ``secret`` is too easy to guess (shorter than ``MIN_SECRET_CHARS``, or below ``MIN_SECRET_BITS``
    as zxcvbn estimates a guesser's work: words, names, dates, keyboard walks, repeats), or None."""
    import zxcvbn

    if len(secret) < MIN_SECRET_CHARS:
        return f"it has {len(secret)} characters (at least {MIN_SECRET_CHARS} are needed)"
    bits = zxcvbn.zxcvbn(secret[:256])["guesses_log10"] * math.log2(10)
    if bits < MIN_SECRET_BITS:
        return f"it takes about 2^{bits:.0f} guesses to find (at least 2^{MIN_SECRET_BITS} are needed)"
    return None


def function_grid(ds: Dataset, seed: int, training_x: np.ndarray) -> np.ndarray:
    """A dense grid over the domain, shifted by a secret offset, minus the training points."""
    rng = np.random.default_rng(seed)
    lo, hi = ds.domain
    n = ds.heldout_points
    offset = rng.uniform(0.05, 0.95)
    x = lo + (np.arange(n) + offset) * (hi - lo) / n
    train = np.asarray(training_x, dtype=np.float64).ravel()
    keep = ~np.isin(np.round(x, 12), np.round(train, 12))
    return x[keep]


def make_heldout(assignment: Assignment, ds: Dataset, seed: int) -> dict[str, np.ndarray]:
    """Held-out inputs and truth for one dataset: ``{"x", "y"}``."""
    if ds.kind == "function":
        f = import_reference(assignment, ds.function)
        x = function_grid(ds, seed, import_reference(assignment, ds.train_x)())
        return {"x": x, "y": np.asarray(f(x), dtype=np.float64)}
    if ds.heldout_file is not None:  # the unreleased dataset the TA keeps: the file is the held-out data
        X, y, _ = read_labelled_csv(ds.heldout_file, ds.label_column)
        return {"x": X, "y": y}
    gen = import_reference(assignment, ds.generator)
    X, y = gen(**ds.heldout, rng=np.random.default_rng(seed))
    return {"x": np.asarray(X, dtype=np.float64), "y": np.asarray(y, dtype=np.float64).ravel()}


def make_training(assignment: Assignment, ds: Dataset) -> dict[str, np.ndarray] | None:
    """The training inputs a function dataset fixes (the sheet's linspace), or None."""
    if ds.kind != "function":
        return None
    x = np.asarray(import_reference(assignment, ds.train_x)(), dtype=np.float64)
    return {"x": x, "y": np.asarray(import_reference(assignment, ds.function)(x), dtype=np.float64)}
