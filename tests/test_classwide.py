"""Class-level warnings from real grading: a class at chance is named once per task, a healthy class never.

The classes are graded as a batch grades them (real intake, a real evaluation worker, the real scorer) on
the coursework spec: the demo class on the generator's held-out data; the same class marked against a
held-out file whose ball radius is in millimetres where the models were trained on metres (the
whole-class breakage the warning is for); and a class that never trained its models.
"""
import numpy as np
import pytest

from conftest import ROOT, small_model

COURSEWORK = ROOT / "reference" / "coursework"
DEMO = ROOT / "submissions" / "coursework"
SECRET = "classwide-test"


def grade_class(folder, heldout_1=None):
    """Every student in ``folder`` graded on the coursework spec: a list of StudentResult. ``heldout_1``: the
    held-out file of dataset 1 (None: drawn from the generator, as for dataset 2)."""
    from grader.evaluate import Evaluator, dataset_seeds
    from grader.intake import collect
    from grader.session import grade_student
    from grader.spec import load_assignment

    with pytest.MonkeyPatch.context() as env:  # the evaluation worker reads the spec, and so the variables, too
        env.delenv("COURSEWORK_HELDOUT_2", raising=False)
        if heldout_1 is None:
            env.delenv("COURSEWORK_HELDOUT_1", raising=False)
        else:
            env.setenv("COURSEWORK_HELDOUT_1", str(heldout_1))
        assignment = load_assignment(COURSEWORK)
        with Evaluator(assignment, dataset_seeds(assignment, SECRET)) as evaluator:
            return assignment, [grade_student(assignment, s, evaluator) for s in collect(folder, assignment)]


def accuracies(students, task_id):
    return {s.id: t.metrics.get("accuracy") for s in students for t in s.tasks if t.id == task_id}


def test_a_healthy_class_gets_no_warning_though_some_students_sit_at_chance():
    from grader.score.classwide import class_warnings

    assignment, students = grade_class(DEMO)
    task1 = accuracies(students, "1")
    assert task1["alice"] > 0.85 and task1["erin"] < 0.55 and task1["bob"] < 0.2  # two broken students of six
    assert class_warnings(assignment, students) == []


def test_a_heldout_file_in_other_units_puts_the_whole_class_at_chance_and_is_named(tmp_path):
    from grader.score.classwide import class_warnings
    from grader.spec import import_reference, load_assignment

    spec = load_assignment(COURSEWORK)
    generate, write_csv = (import_reference(spec, f"datasets:{name}") for name in ("gen_catapult", "write_csv"))
    X, y = generate(2000, 1, np.random.default_rng(5))
    X[:, 2] *= 1000  # the ball radius in millimetres: dataset 2's unit, where dataset 1 has metres
    heldout = tmp_path / "heldout1.csv"
    write_csv(heldout, X, y)

    assignment, students = grade_class(DEMO, heldout_1=heldout)
    task1 = accuracies(students, "1")
    assert task1["alice"] < 0.55  # the reference itself now guesses
    warnings = class_warnings(assignment, students)
    assert len(warnings) == 1  # task 2: one model only, too few to speak for the class
    warning = warnings[0]
    assert warning.startswith("Task 1 (Dataset 1: will the design hit the target?): the class's median held-out "
                              "accuracy is ")
    assert "over 6 students' models, no better than chance" in warning
    assert f"check that the held-out file {heldout} has the training data's columns" in warning
    assert "millimetres" in warning and "before releasing these marks" in warning


def test_a_class_that_never_trained_its_models_is_named_from_three_students_on(tmp_path):
    from grader.score.classwide import MIN_STUDENTS, class_warnings

    scaling = np.loadtxt(DEMO / "alice-1.txt")
    for seed in range(4):  # the reference's network, built and saved without model.fit
        small_model(hidden=((8, "tanh"), (8, "tanh")), inputs=6, seed=seed).save(tmp_path / f"u{seed}-1.h5")
        np.savetxt(tmp_path / f"u{seed}-1.txt", scaling)

    assignment, students = grade_class(tmp_path)
    assert len(students) == 4 and all(a is not None for a in accuracies(students, "1").values())
    warnings = class_warnings(assignment, students)
    assert len(warnings) == 1 and warnings[0].startswith("Task 1 ")
    assert "over 4 students' models" in warnings[0]
    assert "the held-out data, drawn from datasets:gen_catapult, has the form and the law" in warnings[0]
    assert class_warnings(assignment, students[:MIN_STUDENTS - 1]) == []  # two students say nothing of a class
