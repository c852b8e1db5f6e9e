"""Class-level warnings: a task on which the whole class sits at chance.

One student at chance has a broken model; a whole class at chance almost always means that something
every model shares is broken: the held-out data (a file whose columns come in another order or another
unit than the training data's, the wrong label column, a generator unlike the data the students trained
on) or the scaling every model is given.  Such marks must not be released as they are, and no student's
report can say so: ``class_warnings`` looks at a batch's results once they are all scored and tells the
TA, in words, once per task.

Pure: from results to sentences.  It changes no score and reads nothing but its arguments.
"""
from __future__ import annotations

from statistics import median

from ..spec.model import Assignment, Dataset, Task
from ..records import StudentResult

#: the class sits at chance when its median held-out accuracy is at most this above the majority baseline
CHANCE_MARGIN = 0.05
#: a task needs this many students with a measured held-out accuracy before the class says anything
MIN_STUDENTS = 3


def class_warnings(assignment: Assignment, students: list[StudentResult]) -> list[str]:
    """A warning for each task on labelled classes whose class-wide held-out accuracy is no better than
    chance: the median accuracy over the students whose model for the task was measured (at least
    ``MIN_STUDENTS`` of them) is at most ``CHANCE_MARGIN`` above the majority-class baseline the same
    results carry (what always answering the most common class scores), or below it (a class of untrained
    models lands anywhere around chance; labels coded the other way round put it far below)."""
    warnings = []
    for task in assignment.tasks:
        dataset = assignment.datasets.get(task.dataset) if task.dataset else None
        if dataset is None or dataset.kind != "classes":
            continue
        measured = [t.metrics for s in students for t in s.tasks if t.id == task.id and "accuracy" in t.metrics]
        baselines = [m["majority_baseline"] for m in measured if "majority_baseline" in m]
        if len(measured) < MIN_STUDENTS or not baselines:
            continue
        accuracy, baseline = median(m["accuracy"] for m in measured), median(baselines)
        if accuracy <= baseline + CHANCE_MARGIN:
            warnings.append(_warning(task, dataset, accuracy, baseline, len(measured)))
    return warnings


def _warning(task: Task, dataset: Dataset, accuracy: float, baseline: float, count: int) -> str:
    if dataset.heldout_file is not None:
        checks = [f"the held-out file {dataset.heldout_file} has the training data's columns, in the same order "
                  "and the same units (a length in millimetres where the students trained on metres is enough to "
                  "make every model guess)", "its label column is the one meant"]
    else:
        checks = [f"the held-out data, drawn from {dataset.generator}, has the form and the law of the data the "
                  "students trained on"]
    checks.append("each model is given its inputs scaled as it expects")
    return (f"Task {task.id} ({task.title}): the class's median held-out accuracy is {accuracy:.3f} over "
            f"{count} students' models, no better than chance (always answering the most common class scores "
            f"{baseline:.3f}). When a whole class sits at chance, something every model shares is likely broken, "
            f"not every student's work: check that {', that '.join(checks[:-1])} and that {checks[-1]}, before "
            "releasing these marks.")
