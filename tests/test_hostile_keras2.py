"""Hostile and real students' code against what runs it the way they wrote it: the Colab shim (its skipped lines,
files.download), the course's tools.py completed in the kernel, the Keras 2 path and its retry on Keras 3.  Each
test writes its own submission into tmp_path and grades it through the real sandbox, kernel and evaluation
worker; each would fail if the behaviour it names broke."""
import nbformat
import pytest

from conftest import grade_one
from grader.execute.sandbox import bwrap_path

needs_sandbox = pytest.mark.skipif(not bwrap_path(), reason="bubblewrap is not installed (.ci/run installs it)")


def notebook(*cells):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


def run(assignment, evaluator, tmp_path, nb, extra=None, name="tutorial6.ipynb"):
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / name)
    for rel, data in (extra or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return grade_one(assignment, evaluator, tmp_path / "subs")


# -- Colab's lines: a skipped line never breaks the code around it ---------------------------------------------

@needs_sandbox
def test_a_continued_pip_line_is_skipped_whole_and_the_cells_code_still_runs(assignment, evaluator, tmp_path):
    """``!pip install -q \\`` continued on the next line (IPython joins an escaped command's continued lines): the
    shim skipped its first line only, left the indented continuation as Python, and the whole cell, imports and
    all, failed with IndentationError."""
    nb = notebook("!pip install -q \\\n    tensorflow==2.15 \\\n    keras==2.15\nimport numpy as np\n"
                  "total = int(np.arange(4).sum())",
                  "assert total == 6\nimport traceback\ndef where():\n    return traceback.extract_stack()[-2].lineno\n"
                  "!pip install \\\n  foo\nassert where() == 7, where()  # the lines after keep their numbers")
    result = run(assignment, evaluator, tmp_path, nb)
    ran = result.notebooks[0]
    assert ran["cells_failed"] == 0, ran["failures"]
    notes = " ".join(result.notes)
    assert "cell 1 `!pip install -q tensorflow==2.15 keras==2.15`" in notes, notes


@needs_sandbox
def test_colabs_gpu_check_snippet_runs_with_its_skipped_command_giving_no_lines(assignment, evaluator, tmp_path):
    """Colab's own snippet ``gpu_info = !nvidia-smi`` then ``'\\n'.join(gpu_info)``: the shim skipped the
    command and left ``gpu_info`` unbound, so the cell failed with NameError; in IPython ``x = !cmd`` binds the
    command's output lines (an ``SList``): the skipped command binds an empty one."""
    nb = notebook("gpu_info = !nvidia-smi\ngpu_info = '\\n'.join(gpu_info)\nif gpu_info.find('failed') >= 0:\n"
                  "  print('Not connected to a GPU')\nelse:\n  print(gpu_info)\nran_to_the_end = True",
                  "lines = !pip freeze\nassert lines == [] and lines.n == '' and ran_to_the_end")
    result = run(assignment, evaluator, tmp_path, nb)
    ran = result.notebooks[0]
    assert ran["cells_failed"] == 0, ran["failures"]
    assert "cell 1 `gpu_info = !nvidia-smi`" in " ".join(result.notes)
