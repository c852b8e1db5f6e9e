"""A class of sheet-style notebooks graded with two workers: the time a TA waits.

    python bench/bench_class.py [--students 20] [--repeat 3] [--workers 2]

The class is varied like a real one, from the course's own notebooks: most students hand in the whole
sheet (the reference notebook, solution.ipynb), some part of it (frank's notebook from the demo), some a
`# %%`-less script (grace's), some a Keras 2 notebook, run on tf_keras (heidi's).  Every copy gets
its own seeds (the reference's `set_random_seed(n)` and `default_rng(n)` shifted; the others seeded in a
first line) and a comment naming its student, so no two submissions are the same bytes.  Each round grades
the whole class into a fresh output folder with `grader grade --workers 2`; prints the medians and the
target (a class of 20 in under 2 minutes).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _timing import timed  # bench/ is on sys.path: these run as scripts

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "reference" / "tutorial6"
DEMO = ROOT / "submissions" / "tutorial6"
#: (source, share of the class): the whole sheet, part of it, a script, a notebook failing midway
SOURCES = [(SPEC / "solution.ipynb", 12), (DEMO / "frank" / "tutorial6.ipynb", 4),
           (DEMO / "grace" / "tut6_q1.py", 2), (DEMO / "heidi" / "tutorial6.ipynb", 2)]


def _shift(code: str, k: int) -> str:
    """The code with its seeds shifted by ``k``."""
    code = re.sub(r"set_random_seed\((\d+)\)", lambda m: f"set_random_seed({int(m.group(1)) + 17 * k})", code)
    return re.sub(r"default_rng\((\d+)\)", lambda m: f"default_rng({int(m.group(1)) + k})", code)


def _header(k: int, seeded: bool) -> str:
    """A student's first lines: who, and a seed of their own when the code sets none."""
    return f"# student {k:02d}\n" + ("" if seeded else f"import keras\nkeras.utils.set_random_seed({100 + k})\n")


def write_student(source: Path, folder: Path, k: int) -> None:
    folder.mkdir(parents=True)
    text = source.read_text()
    seeded = "set_random_seed(" in text
    if source.suffix == ".py":
        (folder / source.name).write_text(_header(k, seeded) + _shift(text, k))
        return
    nb = json.loads(text)
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for i, cell in enumerate(code_cells):
        code = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        cell["source"] = (_header(k, seeded) if i == 0 else "") + _shift(code, k)
    (folder / source.name).write_text(json.dumps(nb, indent=1))


def make_class(folder: Path, students: int) -> list[str]:
    """``students`` submissions in the mix of ``SOURCES`` (scaled to the class size); their kinds, in order."""
    total = sum(n for _, n in SOURCES)
    kinds = []
    for source, share in SOURCES:
        kinds += [source] * max(1, round(share * students / total))
    kinds = (kinds * students)[:students]
    for k, source in enumerate(kinds):
        write_student(source, folder / f"s{k:02d}", k)
    return [s.parent.name if s.parent != SPEC else "reference" for s in kinds]


def grade(subs: Path, out: Path, workers: int) -> float:
    env = dict(os.environ, GRADER_SECRET="bench-secret")
    cmd = [sys.executable, "-m", "grader.cli", "grade", str(subs), "-a", str(SPEC), "-o", str(out),
           "--workers", str(workers)]
    return timed(cmd, env)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="grader-bench-class-"))
    try:
        kinds = make_class(work / "class", args.students)
        mix = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
        print(f"class of {args.students}: " + ", ".join(f"{n} from {k}" for k, n in mix.items()), flush=True)
        times = []
        for r in range(args.repeat):
            out = work / f"out{r}"
            times.append(grade(work / "class", out, args.workers))
            data = json.loads((out / "results.json").read_text())
            scores = [s["score"] for s in data["students"]]
            stopped = sum(f["status"] == "timeout" for s in data["students"] for nb in s.get("notebooks", [])
                          for f in nb["failures"])
            jax = data.get("time_limits", {}).get("backends", {}).get("jax", {})
            print(f"round {r + 1}: {times[-1]:.1f} s ({len(scores)} graded, median score "
                  f"{statistics.median(scores):g}; cells stopped at their limit: {stopped}; limits: cell "
                  f"{jax.get('cell_s')} s, notebook {jax.get('notebook_s')} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median(times)
    print(f"\n{args.students} notebooks, --workers {args.workers}, median of {args.repeat} round(s): {med:.1f} s "
          f"({med / args.students:.1f} s per student; target: the class in under 120 s)")


if __name__ == "__main__":
    main()
