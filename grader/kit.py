"""The student kit: what a course hands out so that students can ``grader check`` without the answers.

``build_kit(assignment_dir, out)`` copies the spec (``assignment.toml``), the
public thresholds of ``calibration.toml`` (without the calibration's seeds and
held-out secret), the data generators and the support files the spec names
(the course's ``tools.py`` is made from them), and a short README -- never the
reference solution, its notebook or the demo maker.  The kit loads as an
assignment of its own: ``check`` on a kit gives the same verdicts as on the
full assignment folder.
"""
from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import tomli_w

from .errors import OutputError
from .spec import load_assignment

#: what a kit never holds: the answers and what makes them
PRIVATE = ("solution.py", "solution.ipynb", "make_demo.py", "fit_datasets.py")
#: calibration fields that say how the thresholds were made, not what they are
PRIVATE_CALIBRATION = ("seeds", "reference_seed", "heldout_secret", "base_seed")

README = """{title}: the student kit
{rule}

Check your work before you submit it:

    pip install grader            # or the command your course gives
    grader check my_notebook.ipynb -a {folder}

`grader check` runs your notebook (or script, or saved model) and tells you, task by
task, what it found, how it does on public validation data and what to fix. It is not
your grade: the grader uses other, secret held-out data.
"""


def _public_calibration(text: str) -> str:
    """calibration.toml without its seeds and secrets, at any depth (parsed, the private keys left out, and
    written again: however the file lays out its arrays); its ``[meta.versions]`` stay (``grader check`` and
    the Gradescope run compare with them).  Read back to prove it holds none of them."""
    def public(table: dict) -> dict:
        return {k: public(v) if isinstance(v, dict) else v for k, v in table.items() if k not in PRIVATE_CALIBRATION}

    def private_keys(table: dict) -> set[str]:
        return {k for k, v in table.items() if k in PRIVATE_CALIBRATION} | \
            {k for v in table.values() if isinstance(v, dict) for k in private_keys(v)}

    kept = public(tomllib.loads(text))
    out = "# The public thresholds of this assignment, from its calibration (seeds removed).\n\n" + \
        tomli_w.dumps(kept)
    leaked = private_keys(tomllib.loads(out))
    if leaked:
        raise OutputError(f"calibration.toml could not be made public ({', '.join(sorted(leaked))} remain)")
    return out


def build_kit(assignment_dir, out) -> Path:
    """Write the kit of ``assignment_dir`` into ``out`` (a new or empty folder); returns ``out``."""
    assignment = load_assignment(assignment_dir)
    root, out = assignment.root, Path(out)
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} is not empty: choose a new folder for the kit")
    try:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(assignment.spec_path, out / assignment.spec_path.name)
        if assignment.calibration_path is not None:
            (out / assignment.calibration_path.name).write_text(
                _public_calibration(assignment.calibration_path.read_text()))
        for path in sorted(root.glob("*.py")):
            if path.name not in PRIVATE:
                shutil.copyfile(path, out / path.name)
        (out / "README.txt").write_text(README.format(title=assignment.title, rule="=" * (len(assignment.title) + 19),
                                                       folder=out.name))
    except OSError as e:
        raise OutputError(f"cannot write the kit to {out}: {e.strerror or e}") from None
    load_assignment(out)  # the kit must load on its own
    return out
