"""The class page and a student's page from results alone: who sees what, and what the TA is told."""
import html

from conftest import TUTORIAL6
from grader.report import Reporter
from grader.records import StudentResult, TaskResult
from grader.spec import load_assignment


def _student(sid, notebooks=(), score=0.0):
    assignment = load_assignment(TUTORIAL6)
    tasks = [TaskResult(t.id, t.title, 0.0, t.points, "missing", optional=t.optional) for t in assignment.tasks]
    return StudentResult(sid, score, assignment.max_score, tasks, notebooks=list(notebooks))


def test_the_class_page_says_in_plain_words_which_fits_trained_slowly_while_student_pages_keep_quiet(tmp_path):
    reporter = Reporter(load_assignment(TUTORIAL6), tmp_path, warnings=["Unrecognised files: x.bin"])
    reporter.add(_student("ann", [{"name": "a.ipynb", "training": {"fits": 9, "fused": 9, "fallbacks": {}}}]))
    reporter.add(_student("bo", [{"name": "b.ipynb", "training": {
        "fits": 3, "fused": 1, "fallbacks": {"a custom callback (Stopper)": 2}}}]))
    reporter.add(_student("cy"))  # saved models only: no notebook, nothing to count
    reporter.add(_student("di", [{"name": "k2.ipynb", "training": {  # Keras 2 code: no fast training there
        "fits": 1, "fused": 0, "fallbacks": {"Keras' own fit (no fused fit installed)": 1}}}]))
    index = html.unescape(reporter.write_index().read_text())
    assert ("3 of the 13 model trainings in students' notebooks could not use the grader's fast training and ran "
            "Keras' usual, slower loop (the grades are the same either way): a custom callback (Stopper) (2), the "
            "fast training was not available in that run (Keras 2 code, or GRADER_FUSED=0) (1)") in index
    assert "fused" not in index and "compiled programs" not in index  # the implementation's words, not a TA's
    assert "Unrecognised files: x.bin" in index
    page = reporter.page_path("bo").read_text()
    assert "Unrecognised files" not in page and "fast training" not in page  # the TA's business, not the student's


def test_no_slow_training_no_training_line(tmp_path):
    reporter = Reporter(load_assignment(TUTORIAL6), tmp_path)
    reporter.add(_student("cy"))
    assert 'id="training"' not in reporter.write_index().read_text()
    reporter.add(_student("ann", [{"name": "a.ipynb", "training": {"fits": 9, "fused": 9, "fallbacks": {}}}]))
    assert 'id="training"' not in reporter.write_index().read_text()  # every fit the fast way: nothing to say


def _statuses(sid, **status_of):
    """A student whose tasks have the given statuses (task id -> status), the rest missing."""
    result = _student(sid)
    for t in result.tasks:
        if t.id in status_of:
            t.status = status_of[t.id]
            t.message = {"error": "2a.h5: the file is truncated or not an HDF5 Keras file."}.get(t.status, "graded")
    return result


def test_every_status_has_its_own_mark_and_colour_and_the_legend_explains_them(tmp_path):
    import re

    from grader.report import STATUSES

    reporter = Reporter(load_assignment(TUTORIAL6), tmp_path)
    reporter.add(_statuses("carol", **{"1a": "passed", "1c": "partial", "1d": "failed", "2a": "error"}))
    index = reporter.write_index().read_text()
    marks = {status: mark for status, (mark, _, _) in STATUSES.items()}
    assert len(set(marks.values())) == len(marks)  # no two statuses share a mark
    row = index[index.index('href="students/carol.html"'):].split("</tr>")[0]
    cells = dict(re.findall(r'<span class="status (\w+)"[^>]*><span class="mark" aria-hidden="true">(.)</span>', row))
    assert cells == {s: marks[s] for s in ("passed", "partial", "failed", "missing", "error")}, cells
    # error and failed differ in colour too, not only in a tooltip
    css = reporter.css
    colour = {s: re.search(r"^\.%s \{([^}]*)\}" % s, css, re.M).group(1) for s in ("failed", "error")}
    assert colour["failed"] != colour["error"], colour
    legend = index[index.index('id="legend"'):].split("</ul>")[0]
    for status, (mark, word, meaning) in STATUSES.items():
        assert f'<span class="status {status}"><span class="mark" aria-hidden="true">{mark}</span> {word}</span>' \
            in legend and meaning in legend
    assert "✎" in legend and "✎!" in legend  # the override marks, explained before any is used
    assert "could not be graded" in legend

    page = reporter.page_path("carol").read_text()
    assert 'id="legend"' in page
    assert '<span class="status error"><span class="mark" aria-hidden="true">⚠</span> could not be graded</span>' in page
    assert '<span class="status failed"><span class="mark" aria-hidden="true">✗</span> failed</span>' in page
