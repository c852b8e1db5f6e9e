"""A class of saved `.h5` models graded end to end, and its reports re-rendered, side by side.

    python bench/bench_h5_class.py [--students 200] [--repeat 3] [--workers 2] [--against REV] [--profile]

The class: STUDENTS students, each with five distinct `.h5` files (1a, 1c,
2a, 2b, 2c), made from the demo's reference models (`submissions/tutorial6/
alice/`, written by `reference/tutorial6/make_demo.py`) by perturbing their
weights with h5py, by a different amount for every student and file (from
one part in 10^3 to five times each layer's spread), so every file is
distinct and the grades range from full marks to failing; for three students
in five the layers are renamed as a notebook that made other layers first
would name them (dense_16 -> dense_23), as in a real class, where the same
network comes under many names.  Generated once into a cached folder under
the system's temporary folder, never into the repository.

Each round times, on fresh output folders:
  grade    `grader grade CLASS -a reference/tutorial6 -o OUT --workers W`
  report   `grader report -a reference/tutorial6 -o OUT` (re-drawing every page)
  cold     the same with no plot kept from before (`OUT/.plots` removed: what
           a change to the plotting code costs); a grader that keeps no plots
           draws every one in `report` already, so there it is `report`
With `--against REV` the same is timed for the grader at git revision REV
(exported with `git archive` into a cached folder, run with the same
Python), alternating which goes first so machine noise hits both alike, and
the two gradebooks' grades are compared (they must be identical).

Prints the medians, the cost per model and per page, the ratios and the
target (1,000 models graded with reports in under 60 s on 2 cores).

`--profile` adds where the time goes (cProfile; one process at a time):
the parent of `grader grade` (plots, HTML, gradebook, waiting for workers),
`grader report` alone, the evaluation worker's start-up (Keras import,
held-out data) and its per-model work (vetting, loading, predicting,
metrics, plot data), and the start-up of a pool worker.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pstats
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "reference" / "tutorial6"
BASES = {"1a": "1a.h5", "1c": "1c.h5", "2a": "model.h5", "2b": "2b.h5", "2c": "2c.h5"}  # task -> alice's file
SECRET = "bench-h5-class-secret"
GENERATOR_VERSION = "4"  # bump when the way the class is made changes
TARGET_S = 60.0
CACHE = Path(tempfile.gettempdir()) / "grader-bench"


# -- the class ---------------------------------------------------------------------------------------------


def make_class(students: int) -> Path:
    """The cached class folder: ``s000/1a.h5`` ... (made once per base files, size and generator version)."""
    import numpy as np

    base_dir = ROOT / "submissions" / "tutorial6" / "alice"
    h = hashlib.sha256(f"{GENERATOR_VERSION}:{students}".encode())
    for task, name in sorted(BASES.items()):
        h.update(task.encode() + (base_dir / name).read_bytes())
    folder = CACHE / f"h5class-{students}-{h.hexdigest()[:12]}"
    if (folder / ".complete").is_file():
        return folder
    import h5py

    shutil.rmtree(folder, ignore_errors=True)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(12)
    t = time.perf_counter()
    for i in range(students):
        sdir = tmp / f"s{i:03d}"
        sdir.mkdir(parents=True)
        shift = 0 if rng.random() < 0.4 else int(rng.integers(1, 41))  # layers the student's notebook made before
        for task, name in BASES.items():
            path = sdir / f"{task}.h5"
            shutil.copyfile(base_dir / name, path)
            scale = 10 ** rng.uniform(-3, 0.7)  # relative to each weight array's spread

            def perturb(_, obj):
                if isinstance(obj, h5py.Dataset) and obj.ndim >= 1 and obj.dtype.kind == "f":
                    w = obj[()]
                    spread = float(np.std(w)) or 0.1
                    obj[...] = (w + rng.normal(0, scale * spread, w.shape)).astype(w.dtype)

            with h5py.File(path, "r+") as f:
                f["model_weights"].visititems(perturb)
                if shift:
                    rename_layers(f, shift)
    (tmp / ".complete").write_text(f"{students} students x {len(BASES)} models\n")
    tmp.rename(folder)
    print(f"made the class ({students} x {len(BASES)} .h5) in {time.perf_counter() - t:.1f} s: {folder}", flush=True)
    return folder


def rename_layers(f, shift: int) -> None:
    """Rename a saved Sequential's layers (and the model) as if ``shift`` more layers had been made before it:
    the configuration, the weight groups and the list of their names."""
    import numpy as np

    raw = f.attrs["model_config"]
    config = json.loads(raw)

    def renamed(name: str) -> str:
        base, _, number = name.rpartition("_")
        return f"{base}_{int(number) + shift}" if base and number.isdigit() else f"{name}_{shift}"

    config["config"]["name"] = renamed(config["config"]["name"])
    names = {}
    for layer in config["config"]["layers"]:
        old = layer["config"]["name"]
        layer["config"]["name"] = names[old] = renamed(old)
    text = json.dumps(config)
    f.attrs["model_config"] = text.encode() if isinstance(raw, bytes) else text
    weights = f["model_weights"]
    saved = [n.decode() if isinstance(n, bytes) else str(n) for n in weights.attrs["layer_names"]]
    for name in saved:  # in two steps: dense_16 -> dense_17 while dense_17 is still there
        weights.move(name, f"renaming {name}")
    for name in saved:
        weights.move(f"renaming {name}", names.get(name, name))
    weights.attrs["layer_names"] = np.array([names.get(n, n).encode() for n in saved])


# -- the graders compared ----------------------------------------------------------------------------------


def export_revision(rev: str) -> tuple[str, Path]:
    """The grader's package at git revision ``rev``, exported (read-only, ``git archive``) into a cached folder."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"], capture_output=True,
                         text=True, check=True).stdout.strip()
    folder = CACHE / f"grader-{sha[:12]}"
    if not (folder / "grader" / "__init__.py").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha, "grader"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return f"{rev} ({sha[:8]})", folder


def grader_env(code: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["GRADER_SECRET"] = SECRET
    env["PYTHONPATH"] = str(code)  # ahead of the installed (editable) grader
    return env


#: CPU seconds (user + system) of the last run(), the grader and every process it started: on a machine shared
#: with others, wall times stretch with their load; the work done does much less
CPU = []


def run(code: Path, *args, profile: Path | None = None) -> float:
    cmd = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else []) + \
          ["-m", "grader.cli", *map(str, args)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=grader_env(code), cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"grader {args[0]} failed ({code}):\n{proc.stderr[-3000:]}")
    return elapsed


def grades(out: Path) -> list:
    c = sqlite3.connect(f"file:{out / 'gradebook.sqlite'}?mode=ro", uri=True)
    try:
        return c.execute("""select s.student_id, r.score, t.task_id, t.score, t.status, t.metrics, t.message
                            from results r join students s on s.id = r.student
                            join task_results t on t.result = r.id order by 1, 3""").fetchall()
    finally:
        c.close()


def page_facts(out: Path) -> dict:
    """What the pages hold, to compare two graders' reports: pages, images, and a digest of their text with
    each picture's bytes left out."""
    import re

    pages = sorted((out / "students").glob("*.html"))
    text = hashlib.sha256()
    images = 0
    for p in pages:
        html = p.read_text()
        images += html.count("<img")
        text.update(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "PNG", html).encode())
    return {"pages": len(pages), "images": images, "text": text.hexdigest()}


# -- profiles ----------------------------------------------------------------------------------------------

#: (label, file fragment, function name): the parts of the work a profile is summed into
PARENT_PARTS = [
    ("plots: decision regions", "report/plots.py", "regions"),
    ("plots: curves", "report/plots.py", "curve"),
    ("plots: savefig (PNG)", "report/plots.py", "_png"),
    ("HTML: templates rendered", "jinja2/environment.py", "render"),
    ("files written (atomic_write)", "report/__init__.py", "atomic_write"),
    ("gradebook: record a student", "store/gradebook.py", "record"),
    ("gradebook: read measurements", "store/gradebook.py", "current_measurements"),
    ("scoring", "score/__init__.py", "score_student"),
    ("fingerprints", "grader/pipeline.py", "_fingerprints"),
    ("waiting for the workers", "grader/engines.py", "run"),
    ("intake + content hashes", "grader/pipeline.py", "_plan"),
    ("results.json", "report/__init__.py", "write_json"),
]
WORKER_PARTS = [
    ("vet the config (no Keras)", "grader/keras_io.py", "read_config"),
    ("load the model (Keras)", "grader/keras_io.py", "load"),
    ("describe", "grader/keras_io.py", "describe"),
    ("weights digest", "evaluate/worker.py", "weights_digest"),
    ("predict (all calls)", "grader/keras_io.py", "predict"),
    ("sniff the format", "intake/formats.py", "sniff_format"),
]


def summarise(path: Path, parts, total: float | None = None, top: int = 12) -> None:
    st = pstats.Stats(str(path))
    stats = st.stats  # {(file, line, func): (cc, nc, tt, ct, callers)}
    total = total or max(ct for (_, _, _), (_, _, _, ct, _) in stats.items())
    print(f"    total {total:.2f} s")
    for label, frag, func in parts:
        ct = max((v[3] for (f, _, fn), v in stats.items() if fn == func and frag in f), default=0.0)
        if ct:
            print(f"    {label:34s} {ct:7.2f} s  {100 * ct / total:5.1f}%")
    print("    top by own time:")
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    for (f, line, fn), v in rows:
        print(f"      {v[2]:7.2f} s  {fn:32s} {'/'.join(Path(f).parts[-2:])}:{line}")


WORKER_PROFILE = r"""
import cProfile, os, sys, time, json
from pathlib import Path
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
spec, folder, n, out = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
from grader.spec import load_assignment
from grader.evaluate import dataset_seeds
a = load_assignment(spec)
seeds = dataset_seeds(a, "%s")
t = time.perf_counter()
import keras
t_import = time.perf_counter() - t
from grader.evaluate.worker import _Session
t = time.perf_counter()
session = _Session(a, seeds)
t_session = time.perf_counter() - t
files = sorted(folder.glob("s*/*.h5"))[:n]
session.evaluate(str(files[0]), None)  # warm (first model traces the functions)
prof = cProfile.Profile()
t = time.perf_counter()
prof.enable()
for f in files:
    session.evaluate(str(f), None)
prof.disable()
per = (time.perf_counter() - t) / len(files)
prof.dump_stats(out)
print(json.dumps({"keras_import": t_import, "session": t_session, "per_model": per, "models": len(files)}))
""" % SECRET

POOL_START = r"""
import time, sys
t = time.perf_counter()
from grader.engines import warm_up, _worker_evaluator
from grader.spec import freeze
from grader.evaluate import dataset_seeds
spec = freeze(sys.argv[1])
seeds = tuple(sorted(dataset_seeds(spec.parsed, "x").items()))
t1 = time.perf_counter()
_, ev = _worker_evaluator(spec, seeds)
ev.start(wait=True)
t2 = time.perf_counter()
ev.close()
print(f"{t1 - t:.2f} {t2 - t1:.2f}")
"""


def profile(code: Path, klass: Path, work: Path, workers: int) -> None:
    print("\n== profile (cProfile) ==", flush=True)
    out = work / "profile-out"
    t = run(code, "grade", klass, "-a", SPEC, "-o", out, "--workers", workers, profile=work / "grade.prof")
    print(f"  grader grade, the parent process ({t:.1f} s wall):")
    summarise(work / "grade.prof", PARENT_PARTS, total=t)
    t = run(code, "report", "-a", SPEC, "-o", out, profile=work / "report.prof")
    print(f"  grader report ({t:.1f} s wall):")
    summarise(work / "report.prof", PARENT_PARTS, total=t)
    proc = subprocess.run([sys.executable, "-c", POOL_START, str(SPEC)], env=grader_env(code), cwd=code,
                          capture_output=True, text=True)
    if proc.returncode == 0:
        imp, start = map(float, proc.stdout.split())
        print(f"  a pool worker's start-up: grader imports {imp:.2f} s, its evaluation worker ready in {start:.2f} s")
    proc = subprocess.run([sys.executable, "-c", WORKER_PROFILE, str(SPEC), str(klass), "100",
                           str(work / "worker.prof")], env=grader_env(code), cwd=code, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  (the worker profile failed: {proc.stderr[-1500:]})")
        return
    w = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  the evaluation worker: import keras {w['keras_import']:.2f} s, start-up (spec, held-out data) "
          f"{w['session']:.2f} s; {w['per_model'] * 1000:.0f} ms a model over {w['models']} models:")
    summarise(work / "worker.prof", WORKER_PARTS)


# -- main --------------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--against", metavar="REV", default=None,
                        help="also time the grader at this git revision, side by side (e.g. main, HEAD~3)")
    parser.add_argument("--profile", action="store_true", help="where the time goes (cProfile), after the timings")
    parser.add_argument("--profile-only", action="store_true", help="only the profile")
    args = parser.parse_args()

    klass = make_class(args.students)
    n_models = args.students * len(BASES)
    graders = [("this checkout", ROOT)]
    if args.against:
        graders.append(export_revision(args.against))
    work = Path(tempfile.mkdtemp(prefix="grader-bench-h5-"))
    times = {name: {"grade": [], "report": [], "cold": []} for name, _ in graders}
    cpu = {name: {"grade": [], "report": [], "cold": []} for name, _ in graders}
    facts = {}
    try:
        if not args.profile_only:
            for r in range(args.repeat):
                order = graders if r % 2 == 0 else graders[::-1]
                for name, code in order:
                    out = work / f"out-{r}-{graders.index((name, code))}"
                    times[name]["grade"].append(run(code, "grade", klass, "-a", SPEC, "-o", out,
                                                    "--workers", args.workers))
                    cpu[name]["grade"].append(CPU[-1])
                    times[name]["report"].append(run(code, "report", "-a", SPEC, "-o", out))
                    cpu[name]["report"].append(CPU[-1])
                    if (out / ".plots").is_dir():
                        shutil.rmtree(out / ".plots")
                        times[name]["cold"].append(run(code, "report", "-a", SPEC, "-o", out))
                    else:
                        times[name]["cold"].append(times[name]["report"][-1])
                    cpu[name]["cold"].append(CPU[-1])
                    facts[name] = (grades(out), page_facts(out))
                    shutil.rmtree(out)
                load = os.getloadavg()[0]
                print(f"round {r + 1} (load {load:.1f}): " + ", ".join(
                    f"{name}: grade {t['grade'][-1]:.1f} s ({cpu[name]['grade'][-1]:.0f} s CPU), report "
                    f"{t['report'][-1]:.1f} s, cold {t['cold'][-1]:.1f} s" for name, t in times.items()), flush=True)
            print(f"\n{args.students} students x {len(BASES)} .h5 = {n_models} models, --workers {args.workers}, "
                  f"medians of {args.repeat} round(s):")
            med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
            for name, m in med.items():
                print(f"  {name:28s} grade {m['grade']:6.1f} s ({1000 * m['grade'] / n_models:4.0f} ms a model)  "
                      f"report {m['report']:6.1f} s ({1000 * m['report'] / args.students:4.0f} ms a page)  "
                      f"cold {m['cold']:6.1f} s ({1000 * m['cold'] / args.students:4.0f} ms a page)  "
                      f"{facts[name][1]['pages']} pages, {facts[name][1]['images']} images")
            cmed = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in cpu.items()}
            print("  CPU seconds, the grader and all its processes (less sensitive to other users' load):")
            for name, m in cmed.items():
                print(f"  {name:28s} grade {m['grade']:6.1f} s   report {m['report']:6.1f} s   cold {m['cold']:6.1f} s")
            if len(graders) == 2:
                (a, ma), (b, mb) = list(med.items())
                print(f"  ratio {b} / {a}, wall: grade {mb['grade'] / ma['grade']:.2f}x, "
                      f"report {mb['report'] / ma['report']:.2f}x, cold {mb['cold'] / ma['cold']:.2f}x")
                ca, cb = cmed[a], cmed[b]
                print(f"  ratio {b} / {a}, CPU:  grade {cb['grade'] / ca['grade']:.2f}x, "
                      f"report {cb['report'] / ca['report']:.2f}x, cold {cb['cold'] / ca['cold']:.2f}x")
                same = facts[a][0] == facts[b][0]
                print(f"  grades identical (every task's score, status, metrics and message): {'yes' if same else 'NO'}")
                same = facts[a][1]["text"] == facts[b][1]["text"]
                print(f"  pages identical but for the pictures' bytes: {'yes' if same else 'NO'}")
            m = med[graders[0][0]]
            print(f"target: {n_models} models graded with reports in < {TARGET_S:.0f} s: "
                  f"{m['grade']:.1f} s ({'met' if m['grade'] < TARGET_S else 'not met'})")
        if args.profile or args.profile_only:
            profile(ROOT, klass, work, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
