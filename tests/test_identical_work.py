"""Identical work is what the code does and what the weights are, never the sheet's own code.

Issue 26, finding 9: four students who handed in the sheet's code (metadata, outputs and blank lines
differing) were one "identical" group, while a copy with one comment line added, or every weight moved by
one ulp, escaped.  Each case here has its own students; the last grades them all in one real batch.
"""
import copy
import json
import os
import subprocess
import sys

import nbformat
import numpy as np
import pytest

from conftest import ROOT, TUTORIAL6, small_model

pytestmark = pytest.mark.slow  # the batch at the end runs notebooks (also in conftest.SLOW_MODULES)

#: a student's own code, beyond the sheet's: nothing in the reference notebook does this
OWN = ("from tensorflow.keras.models import Sequential\nfrom tensorflow.keras.layers import Dense\n"
       "import numpy as np\n"
       "def widen(n):\n    '''my helper'''\n    return [Dense(units=n, activation='relu') for _ in range(2)]\n"
       "net = Sequential([Dense(units=7, activation='tanh', input_dim=1)] + widen(9))\n"
       "scores = {k: k ** 2 for k in range(17)}\n")


def _sheet_cells():
    nb = nbformat.read(TUTORIAL6 / "solution.ipynb", as_version=4)
    return [str(c.source) for c in nb.cells if c.cell_type == "code"]


def _write(folder, cells, variant=0):
    """A notebook of ``cells``; ``variant`` changes what a notebook carries beside its code: metadata,
    outputs, execution counts, blank lines."""
    nb = nbformat.v4.new_notebook()
    for i, source in enumerate(cells):
        cell = nbformat.v4.new_code_cell(("\n" * (variant % 3)) + source + ("\n\n" if variant % 2 else ""))
        cell.execution_count = i + variant * 10
        cell.metadata["collapsed"] = bool(variant % 2)
        cell.outputs = [nbformat.v4.new_output("stream", text=f"run {variant} cell {i}\n")] if variant else []
        nb.cells.append(cell)
        if variant:
            nb.cells.append(nbformat.v4.new_markdown_cell(f"my notes {variant}"))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": f"Python 3 ({variant})", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "work.ipynb")
    return folder / "work.ipynb"


def _identities(assignment, folders, sheet):
    from grader.intake import collect_one
    from grader.review import code_digest

    out = {}
    for sid, folder in folders.items():
        sub = collect_one(folder, assignment, sid)
        digests = {f.relative: d for f in sub.files if (d := code_digest(f, sheet))}
        out[sid] = {"models": {}, "weights": {}, "code": digests}
    return out


@pytest.fixture(scope="module")
def assignment():
    from grader.spec import load_assignment

    return load_assignment(TUTORIAL6)


def test_four_students_handing_in_the_sheets_code_are_not_flagged(assignment, tmp_path):
    from grader.review import identical_work, sheet_statements

    folders = {f"s{v}": _write(tmp_path / f"s{v}", _sheet_cells(), v).parent for v in range(4)}
    sheet = sheet_statements(assignment)
    assert identical_work(_identities(assignment, folders, sheet)) == []
    # the same four with no sheet to take out: one group, as the grader said before (the reproduction)
    before = identical_work(_identities(assignment, folders, frozenset()))
    assert [g["students"] for g in before] == [["s0", "s1", "s2", "s3"]]


def test_a_copy_with_one_added_comment_line_is_flagged(assignment, tmp_path):
    from grader.review import identical_work, sheet_statements

    cells = _sheet_cells()[:2] + [OWN]
    commented = _sheet_cells()[:2] + [OWN.replace("net =", "# my own idea, honest\nnet =")]
    other = _sheet_cells()[:2] + [OWN.replace("widen(9)", "widen(11)")]
    folders = {"orig": _write(tmp_path / "orig", cells).parent,
               "copy": _write(tmp_path / "copy", commented, 1).parent,
               "own": _write(tmp_path / "own", other, 2).parent}
    groups = identical_work(_identities(assignment, folders, sheet_statements(assignment)))
    assert [g["students"] for g in groups] == [["copy", "orig"]]
    assert groups[0]["evidence"][0]["kind"] == "code"


def test_quotes_docstrings_and_magics_do_not_hide_a_copy():
    from grader.review import code_statements

    a = code_statements("def f(x):\n    '''doc'''\n    return x + 'a'  # c\n")
    b = code_statements("%matplotlib inline\ndef f(x):\n\n    return x + \"a\"\n")
    assert [s for s in b if "matplotlib" not in s] == a and a == ["def f ( x ) :", "return x + 'a'"]
    assert code_statements("this is ( not python") == ["this is ( not python"]


def _moved(model, steps=1):
    """A copy of ``model`` with every weight moved by ``steps`` ulp."""
    twin = copy.deepcopy(model)
    twin.set_weights([np.nextafter(w, np.inf if steps > 0 else -np.inf).astype(w.dtype) for w in model.get_weights()])
    return twin


def test_weights_moved_by_one_ulp_are_flagged_and_an_independent_model_is_not():
    from grader.evaluate.worker import weights_digest, weights_sketch
    from grader.review import identical_work

    model = small_model(seed=1)
    twin = _moved(model)
    assert all(np.any(a != b) for a, b in zip(model.get_weights(), twin.get_weights()))
    assert weights_digest(model) != weights_digest(twin)  # bytes differ: a hash never found it
    other = small_model(seed=2)
    identities = {sid: {"models": {}, "code": {}, "weights": {"2a.h5": weights_sketch(m)}}
                  for sid, m in (("a", model), ("b", twin), ("c", other))}
    groups = identical_work(identities)
    assert [g["students"] for g in groups] == [["a", "b"]] and groups[0]["evidence"][0]["kind"] == "weights"
    json.dumps(identities)  # kept in the gradebook as JSON


def test_a_real_batch_flags_the_copies_and_not_the_sheet(tmp_path):
    """The students above in one batch (``grader grade``), read back by ``grader review --json``.  The four
    who hand in the sheet's first cells train its 1a network from its own seed: the same weights, by design."""
    subs, out = tmp_path / "submissions", tmp_path / "out"
    sheet = _sheet_cells()[:3]  # the sheet's imports, data and 1a (200 epochs, seeded by the sheet)
    for v in range(4):
        _write(subs / f"sheet{v}", sheet, v)
    _write(subs / "orig", sheet + [OWN])
    _write(subs / "copy", sheet + [OWN.replace("net =", "# my own idea, honest\nnet =")], 1)
    model = small_model(seed=3)
    (subs / "w_orig").mkdir()
    model.save(subs / "w_orig" / "2a.h5")
    (subs / "w_ulp").mkdir()
    _moved(model).save(subs / "w_ulp" / "2a.h5")
    (subs / "w_own").mkdir()
    small_model(seed=4).save(subs / "w_own" / "2a.h5")
    env = {k: v for k, v in os.environ.items() if k != "GRADER_SECRET"}
    grade = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(subs), "-a", str(TUTORIAL6), "-o", str(out)],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    assert grade.returncode == 0, grade.stderr[-3000:]
    review = subprocess.run([sys.executable, "-m", "grader.cli", "review", "-o", str(out), "--json"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert review.returncode == 0, review.stderr[-3000:]
    found = json.loads(review.stdout)
    groups = sorted(g["students"] for g in found["identical"])
    assert groups == [["copy", "orig"], ["w_orig", "w_ulp"]], groups
    evidence = {e["kind"] for g in found["identical"] if g["students"] == ["copy", "orig"] for e in g["evidence"]}
    assert evidence == {"code", "weights"}  # their own code, and the 1a it trained from the sheet's seed
    results = {s["id"]: s for s in json.loads((out / "results.json").read_text())["students"]}
    assert all(results[f"sheet{v}"]["notebooks"][0]["models_captured"] >= 1 for v in range(4))
