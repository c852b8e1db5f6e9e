"""Colab notebooks run: Colab's module is there (harmless), its installation lines and magics are skipped with a
note, files.download hands a file in, files.upload says what the grader does instead (drive.mount gives an empty
Drive folder of the run), and one failing cell is explained once, not under every task."""
import nbformat
import pytest

from conftest import ROOT, TUTORIAL6, grade_one, needs_sandbox, task_of


def _demo():
    """make_demo's cells (the reference solution written as a student writes it), imported without leaving its
    folder on sys.path."""
    import importlib.util
    import sys

    path, modules = list(sys.path), set(sys.modules)
    try:
        spec = importlib.util.spec_from_file_location("_colab_make_demo", TUTORIAL6 / "make_demo.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if name in ("solution", "datasets"):
                del sys.modules[name]


def notebook(*cells, ids="cell"):
    """A notebook of code cells, the same bytes on every run of the tests: its cells' ids are ``{ids}-1``, ...
    (nbformat draws a new cell's id at random, and a run's seed comes from the submission's bytes, so a random id
    gave each run of a test another seed: the sheet's SGD network trained well under most, stuck under some)."""
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c, id=f"{ids}-{i}")
                                           for i, c in enumerate(cells, 1)])


def run(assignment, evaluator, tmp_path, nb, extra=None):
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / "tutorial6.ipynb")
    for name, data in (extra or {}).items():
        (folder / name).write_bytes(data)
    return grade_one(assignment, evaluator, tmp_path / "subs")


#: the sheet's grid plot of 2a, with the course's helper
GRID = """Xgrid, x1line, x2line = gen_sample_grid(200, 200, 10)
yp = model.predict(Xgrid, verbose=0)
plt.imshow(yp[:, 0].reshape(200, 200), extent=[-10, 10, -10, 10], origin='lower')"""


@needs_sandbox
def test_a_colab_notebook_gets_the_marks_of_its_models(assignment, evaluator, tmp_path):
    demo = _demo()
    nb = notebook(
        "!pip install tensorflow\n%tensorflow_version 2.x\n!nvidia-smi",
        demo.IMPORTS + "\nfrom google.colab import files",
        "np.random.seed(0)\nimport keras\nkeras.utils.set_random_seed(0)",
        demo.CURVE,
        demo.TASK_1A,
        demo.TASK_2A,
        GRID,
        "model.save('model.h5')\nfiles.download('model.h5')",
    )
    result = run(assignment, evaluator, tmp_path, nb)
    ran = result.notebooks[0]
    assert ran["cells_failed"] == 0, ran["failures"]
    for tid in ("1a", "2a", "3"):
        t = task_of(result, tid)
        assert t.status == "passed" and t.score == t.max_score, (tid, t.message)
    assert "model.h5 (saved by tutorial6.ipynb)" in task_of(result, "3").source
    notes = " ".join(result.notes)
    assert "Colab lines skipped: cell 1 `!pip install tensorflow`, cell 1 `%tensorflow_version 2.x`" in notes
    assert "files.download('model.h5'): the grader took model.h5" in notes
    assert "the grader gave it the course's tools.py" in notes


@needs_sandbox
def test_colab_lines_are_skipped_in_the_kernel_not_run(assignment, evaluator, tmp_path):
    """A skipped line runs nothing (no shell, no pip): the cell goes on at the same indentation, and says so."""
    nb = notebook(
        "import os\nran = []\nif True:\n    !pip install nothing-at-all > pip-ran.txt\n    ran.append(1)\n"
        "%pip install keras==2.15\nassert not os.path.exists('pip-ran.txt') and ran == [1]",
        "x = !pip freeze\nassert x == []",  # IPython binds the output's lines: none
        "!echo hello > echo-ran.txt\nassert open('echo-ran.txt').read().strip() == 'hello'",  # other shell lines run
    )
    result = run(assignment, evaluator, tmp_path, nb)
    ran = result.notebooks[0]
    assert ran["cells_failed"] == 0, ran["failures"]
    assert "cell 1 `!pip install nothing-at-all > pip-ran.txt`" in " ".join(result.notes)


@needs_sandbox
def test_upload_fails_saying_what_the_grader_does_instead_and_later_tasks_still_earn(
        assignment, evaluator, tmp_path):
    demo = _demo()
    nb = notebook(
        demo.IMPORTS + "\nfrom google.colab import files, drive",
        "uploaded = files.upload()",
        "drive.mount('/content/drive')",
        "files.download('never-saved.h5')",
        demo.CURVE,
        demo.TASK_1B,
    )
    result = run(assignment, evaluator, tmp_path, nb)
    failures = {f["cell"]: f for f in result.notebooks[0]["failures"]}
    assert set(failures) == {2, 4}  # drive.mount makes an empty Drive folder of the run (tests/test_real_code.py)
    assert "files.upload() cannot ask for files while the grader runs your notebook" in failures[2]["explanation"]
    assert "hand in the files your notebook reads beside it" in failures[2]["explanation"]
    assert "Cannot find file: never-saved.h5" in failures[4]["explanation"]
    assert task_of(result, "1b").status == "passed"


@needs_sandbox
def test_one_failing_cell_is_explained_once_not_under_every_task(assignment, evaluator, tmp_path):
    demo = _demo()
    nb = notebook(demo.IMPORTS + "\nimport colab_only_helpers", demo.CURVE, demo.TASK_1B)
    result = run(assignment, evaluator, tmp_path, nb)
    explanation = result.notebooks[0]["failures"][0]["explanation"]
    missing = [t for t in result.tasks if t.status == "missing" and not t.optional and t.id not in ("3",)]
    assert len(missing) >= 5
    for t in missing:
        assert explanation not in t.message  # said once, in the notebook's section
        assert "cell 1 of tutorial6.ipynb failed" in t.message  # each missing task points to it
    from grader.report import Reporter

    page = Reporter(assignment, tmp_path / "out").student_page(result).read_text()
    assert page.count("not available in the grading environment") == 1


# -- hostile: what the kernel records for the notes is the student's to forge, never more ---------------------

@needs_sandbox
def test_forged_kernel_records_change_only_words_and_links_are_not_followed(assignment, evaluator, tmp_path):
    demo = _demo()
    forge = ("import os, json\nd = os.environ['GRADER_CAPTURE_DIR']\n"
             "os.symlink('/etc/passwd', os.path.join(d, 'downloads.jsonl'))\n"
             "json.dump({'module': 'tools', 'own': True, 'added': ['<script>alert(1)</script>', 'x' * 5000, "
             "'ok_name', 7]}, open(os.path.join(d, 'support.json'), 'w'))")
    result = run(assignment, evaluator, tmp_path, notebook(demo.IMPORTS, forge, demo.CURVE, demo.TASK_1B))
    assert result.notebooks[0]["cells_failed"] == 0, result.notebooks[0]["failures"]
    assert task_of(result, "1b").status == "passed"  # grading went on
    notes = " ".join(result.notes)
    assert "root:" not in notes and "files.download" not in notes  # the link was not followed
    assert "<script>" not in notes and "x" * 100 not in notes  # only names that are identifiers are repeated
    assert "ok_name" in notes  # (the forged claim itself is the student's own words about their own file)


@needs_sandbox
def test_a_pipe_in_place_of_a_kernel_record_is_not_opened(assignment, evaluator, tmp_path):
    demo = _demo()
    forge = ("import os\nd = os.environ['GRADER_CAPTURE_DIR']\n"
             "os.mkfifo(os.path.join(d, 'support.json'))\nos.mkfifo(os.path.join(d, 'downloads.jsonl'))")
    result = run(assignment, evaluator, tmp_path, notebook(demo.IMPORTS, forge, demo.CURVE, demo.TASK_1B))
    assert task_of(result, "1b").status == "passed"  # the grader did not block on the pipes
    assert "the grader gave it the course's tools.py" in " ".join(result.notes)


@needs_sandbox
def test_downloading_a_file_handed_in_beside_the_notebook_grades_that_file(assignment, evaluator, tmp_path):
    nb = notebook("from google.colab import files\nfiles.download('model.h5')", "files.download('notes.txt')")
    result = run(assignment, evaluator, tmp_path, nb, extra={
        "model.h5": (ROOT / "submissions" / "tutorial6" / "alice" / "model.h5").read_bytes(), "notes.txt": b"hi"})
    assert result.notebooks[0]["cells_failed"] == 0, result.notebooks[0]["failures"]
    notes = " ".join(result.notes)
    assert "files.download('model.h5'): model.h5 is graded as the file you handed in" in notes
    assert "files.download('notes.txt'): noted, but the grader only grades model files" in notes
    t = task_of(result, "3")
    assert t.status == "passed" and t.source == "model.h5"


@needs_sandbox
def test_colabs_content_folder_is_the_notebooks_folder(assignment, evaluator, tmp_path):
    nb = notebook("import os, keras\nfrom google.colab import files\nassert os.getcwd() == os.path.realpath('/content')",
                  "m = keras.models.load_model('trained.h5')\nm.save('/content/model.h5')\n"
                  "files.download('/content/model.h5')")
    result = run(assignment, evaluator, tmp_path, nb, extra={
        "trained.h5": (ROOT / "submissions" / "tutorial6" / "alice" / "model.h5").read_bytes()})
    assert result.notebooks[0]["cells_failed"] == 0, result.notebooks[0]["failures"]
    assert "files.download('/content/model.h5'): the grader took model.h5" in " ".join(result.notes)
    t = task_of(result, "3")
    assert t.status == "passed" and t.source == "model.h5 (saved by tutorial6.ipynb)", (t.status, t.source)


def test_forged_kernel_records_of_the_wrong_types_are_left_out(assignment, tmp_path):
    """support.json is written by the notebook: a list where a name is read, a number where a list is, must not
    make the grader fail on that student (it raised TypeError, found by a review)."""
    import json

    import nbformat

    from grader.execute import _course_notes, _kernel_records
    from grader.harvest import SAVED_MODEL_SUFFIXES

    (tmp_path / "support.json").write_text(json.dumps({"module": ["tools"], "own": True, "added": 7,
                                                        "failed": {"x": 1}}))
    assert _kernel_records(tmp_path) == ([], {"own": True})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("from tools import *")])
    notes = _course_notes(assignment, nb, tmp_path, [], {}, SAVED_MODEL_SUFFIXES)  # no TypeError: the forged fields are dropped
    assert not any("Your own" in n or "failed when it was imported" in n for n in notes), notes
    (tmp_path / "support.json").write_text(json.dumps({"module": "tools", "own": True, "added": ["gen_xor", 7]}))
    [note] = _course_notes(assignment, nb, tmp_path, [], {}, SAVED_MODEL_SUFFIXES)
    assert "gen_xor" in note
