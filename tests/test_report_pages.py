"""The class page and a student's page from results alone: who sees what, and what the TA is told."""
from conftest import TUTORIAL6
from grader.report import Reporter
from grader.score.results import StudentResult, TaskResult
from grader.spec import load_assignment


def _student(sid, notebooks=(), score=0.0):
    assignment = load_assignment(TUTORIAL6)
    tasks = [TaskResult(t.id, t.title, 0.0, t.points, "missing", optional=t.optional) for t in assignment.tasks]
    return StudentResult(sid, score, assignment.max_score, tasks, notebooks=list(notebooks))


def test_the_class_page_counts_fused_fits_and_names_the_fallbacks_while_student_pages_keep_quiet(tmp_path):
    reporter = Reporter(load_assignment(TUTORIAL6), tmp_path, warnings=["Unrecognised files: x.bin"])
    reporter.add(_student("ann", [{"name": "a.ipynb", "training": {"fits": 9, "fused": 9, "fallbacks": {}}}]))
    reporter.add(_student("bo", [{"name": "b.ipynb", "training": {
        "fits": 3, "fused": 1, "fallbacks": {"a custom callback (Stopper)": 2}}}]))
    reporter.add(_student("cy"))  # saved models only: no notebook, nothing to count
    index = reporter.write_index().read_text()
    assert "Training in notebooks: 10 of 12 fit(s) ran as compiled programs (fused); 2 fell back to Keras" in index
    assert "a custom callback (Stopper) (2)" in index
    assert "Unrecognised files: x.bin" in index
    page = reporter.page_path("bo").read_text()
    assert "Unrecognised files" not in page and "fused" not in page  # the TA's business, not the student's


def test_no_notebooks_no_training_line(tmp_path):
    reporter = Reporter(load_assignment(TUTORIAL6), tmp_path)
    reporter.add(_student("cy"))
    assert 'id="training"' not in reporter.write_index().read_text()
