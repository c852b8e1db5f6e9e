"""Write the demo submissions (``submissions/tutorial6/``) from the reference implementations.

    python reference/tutorial6/make_demo.py [OUT]

Students, each showing one thing a TA meets:
  alice/   strong: every task, mostly named by file (1a.h5 ...), one left for
           the grader to infer (circles.keras), model.h5 for task 3
  bob/     weak: his "1c" is the 1a network (3 ReLUs, 200 epochs), as the
           sheet says such a network fits poorly
  carol/   a corrupt file (a truncated 2a.h5) next to a good 1c.h5
  dave/    task 2a with its two outputs swapped (the course's known mistake)
  erin_1b.h5  a lone file at the top level: student "erin", task 1b
Seeds are the calibration's reference seeds, so the files are reproducible.
"""
from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


import solution  # noqa: E402


def seeds():
    cal = tomllib.loads((HERE / "calibration.toml").read_text())["tasks"]
    return {tid: entry["reference_seed"] for tid, entry in cal.items()}


def main(out: Path):
    seed = seeds()
    trained = {}

    def model(task):
        if task not in trained:
            trained[task] = getattr(solution, f"task_{task}")(seed[task])[0]
        return trained[task]

    if out.exists():
        shutil.rmtree(out)
    alice = out / "alice"
    alice.mkdir(parents=True)
    for task in ("1a", "1b", "1c", "1d", "1e", "1f", "2b", "2c", "4"):
        model(task).save(alice / f"{task}.h5")
    model("2a").save(alice / "circles.keras")  # no task in the name: inferred
    model("2a").save(alice / "model.h5")       # task 3

    bob = out / "bob"
    bob.mkdir()
    model("1a").save(bob / "1a.h5")
    model("1a").save(bob / "1c.h5")  # the 3-ReLU network where 150 ReLUs were asked for
    model("2a").save(bob / "2a.h5")

    carol = out / "carol"
    carol.mkdir()
    model("1c").save(carol / "1c.h5")
    model("2a").save(carol / "2a.h5")
    data = (carol / "2a.h5").read_bytes()
    (carol / "2a.h5").write_bytes(data[: len(data) // 3])  # an interrupted upload

    dave = out / "dave"
    dave.mkdir()
    swapped = solution.task_2a(seed["2a"])[0]
    kernel, bias = swapped.layers[-1].get_weights()
    swapped.layers[-1].set_weights([kernel[:, ::-1], bias[::-1]])
    swapped.save(dave / "2a.h5")
    model("1c").save(dave / "1c.h5")

    model("1b").save(out / "erin_1b.h5")
    print(f"demo submissions written to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent.parent / "submissions" / "tutorial6")
