"""Judging one model against one task by the spec's thresholds: architecture, metric, points, words.

``assess(task, evaluation)`` turns the worker's measurements into an ``Assessment``: the fraction of the
task's points earned and the sentences that explain it, including the course's known mistakes (outputs in
the wrong order, one output instead of two, no softmax, NaN weights, wrong input width).

Two stages read it: re-training, to plan which recipes to train again (``wants_retraining``,
``retrain.plan``), and scoring, which credits the best of the own run and the first K re-trainings by the
same thresholds (``judge``), so a changed threshold re-scores without re-training.  Why:
docs/design/retrain.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .records import Evaluation, ModelInfo, Provenance
from .spec.model import METRICS, METRICS_FOR_KIND, Architecture, Task, goodness, passes, relation  # noqa: F401 (passes: re-exported)

METRIC_LABELS = {
    "mse": "mean squared error against the true function",
    "max_error": "largest error against the true function",
    "accuracy": "held-out accuracy",
    "gap": "training accuracy minus held-out accuracy",
}


#: accuracy must beat the majority-class baseline by this much to earn any credit
BASELINE_MARGIN = 0.01


def fmt_value(metric: str, value: float) -> str:
    if metric in ("accuracy", "gap"):
        return f"{value:.3f}"
    return f"{value:.3g}"


@dataclass
class Assessment:
    task_id: str
    fraction: float
    architecture_ok: bool
    metric: str | None
    value: float | None
    metric_fraction: float
    metrics: dict = field(default_factory=dict)
    sentences: list[str] = field(default_factory=list)
    threshold: dict | None = None

    def message(self) -> str:
        return " ".join(self.sentences)


def architecture_differences(arch: Architecture, info: ModelInfo) -> list[str]:
    """What differs between the expected architecture and the model, in words."""
    diffs = []
    dense = list(info.dense)
    if info.inputs != arch.inputs:
        diffs.append(f"the model takes {info.inputs} input(s) but the task has {arch.inputs}")
    if not dense:
        return diffs + ["the model has no Dense layer"]
    *hidden, output = dense
    if not arch.output.matches(*output):
        diffs.append(f"its output layer is Dense({output[0]}, {output[1]}) but the task needs "
                     f"{arch.output.describe()}")
    if arch.hidden is not None:
        if len(hidden) != len(arch.hidden):
            diffs.append(f"it has {len(hidden)} hidden layer(s) but the task asks for {len(arch.hidden)} "
                         f"({', '.join(p.describe() for p in arch.hidden) or 'none'})")
        else:
            for i, (pattern, layer) in enumerate(zip(arch.hidden, hidden, strict=True), 1):
                if not pattern.matches(*layer):
                    diffs.append(f"hidden layer {i} is Dense({layer[0]}, {layer[1]}) but the task asks for "
                                 f"{pattern.describe()}")
    for other in info.other_layers:
        if other.startswith(("Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout")):
            continue  # inactive at evaluation time
        diffs.append(f"it has an extra {other} layer")
    return diffs


def _at_baseline(metric: str, value: float, metrics: dict) -> bool:
    """An accuracy no better than always answering the most common class (never worth credit)."""
    baseline = metrics.get("majority_baseline")
    return metric == "accuracy" and baseline is not None and value <= baseline + BASELINE_MARGIN


def judge(task: Task, metric: str, value: float, metrics: dict) -> tuple[float, str]:
    """The share of a metric's credit that ``value`` earns on ``task``, and why: ``"baseline"`` (an accuracy no
    better than always answering the most common class, which never earns credit), ``"pass"``, ``"partial"``
    or ``"fail"``.  ``metrics``: the measurements ``value`` is one of (for the majority baseline)."""
    th = task.threshold(metric)
    if _at_baseline(metric, value, metrics):
        return 0.0, "baseline"
    if passes(metric, value, th.passing):
        return 1.0, "pass"
    if passes(metric, value, th.partial):
        return task.partial_credit, "partial"
    return 0.0, "fail"


def judged_on(task: Task, evaluation: Evaluation) -> str | None:
    """The Keras whose thresholds judge this model on ``task``: a Keras 2 run's model is judged by the Keras 2
    path's own (``Task.keras2_thresholds``) only when its recipe cannot be re-trained (a saved file, a refused or
    failed recipe).  A recipe that is re-trained (on Keras 3, K times) is judged by Keras 3's thresholds, which
    hold there with re-training (calibration's ``false_fail``): one ``lr=`` must not buy looser ones."""
    keras = evaluation.provenance.keras if evaluation.provenance is not None else None
    if keras != "2":
        return keras
    r = evaluation.retraining
    retrained = task.retrained and evaluation.made_by == "fit" and (r is None or (not r.refused and bool(r.runs)))
    return "3" if retrained else "2"


def assess(task: Task, evaluation: Evaluation) -> Assessment:
    task = task.for_keras(judged_on(task, evaluation))
    info = evaluation.info
    measured = task.dataset in evaluation.datasets
    metrics = dict(evaluation.measured_on(task.dataset).metrics)
    a = Assessment(task.id, 0.0, False, None, None, 0.0, metrics)
    say = a.sentences.append

    if not info.finite:
        say("The model's weights contain NaN or infinite values, so it cannot predict anything: training "
            "diverged. Lower the learning rate or check the training data for NaN values, then train again.")
        return a

    diffs = architecture_differences(task.architecture, info)
    a.architecture_ok = not diffs
    outputs = info.outputs
    expected_outputs = task.architecture.output.units
    if outputs == 1 and expected_outputs == 2:
        say("The model has a single output, but this task needs two softmax outputs (one probability per "
            "class): end the network with Dense(2, activation='softmax') and train on to_categorical(y).")
    if "outputs_are_probabilities" in metrics and not metrics["outputs_are_probabilities"] \
            and outputs and outputs > 1 and "softmax" in task.architecture.output.activations:
        say("The outputs are not probabilities (they do not sum to one): the last layer needs "
            "activation='softmax'.")
    if diffs:  # a wrong network is the fault to fix first: it explains the numbers that follow
        say("Architecture: " + "; ".join(diffs) + f". Expected: {task.architecture.describe()}.")

    # the scaling file next: when it is broken or missing, it explains the numbers that follow
    _preprocessing_sentences(evaluation.preprocessing, metrics, a, say, info.inputs)
    metric = task.metric if task.metric in metrics else None
    if metric is None and task.fallback_metric in metrics:
        metric = task.fallback_metric
        if task.fallback_reason:
            say(task.fallback_reason)
    if metric is None:
        if not measured:
            say(f"The model could not be measured on this task's data ({info.inputs} input(s), "
                f"{outputs} output(s)).")
        else:
            say(f"The {METRIC_LABELS[task.metric]} could not be measured for this model.")
    else:
        _judge_metric(task, metric, float(metrics[metric]), evaluation, a, say)

    refusal = training_refusal(task, evaluation.provenance)
    if refusal and a.metric_fraction > 0:
        a.metric_fraction = 0.0
        a.metrics["training_refused"] = 1.0
        say(refusal)

    if a.architecture_ok:
        say("The architecture matches the task.")
    w = task.architecture_weight
    fraction = w * a.architecture_ok + (1 - w) * a.metric_fraction
    if task.conciseness is not None:
        c = task.conciseness
        nodes = sum(int(units) for units, _ in info.dense)
        a.metrics["nodes"] = float(nodes)
        earned = c.curve(nodes) if a.metric_fraction > 0 else 0.0
        full = c.curve.full_at()
        if a.metric_fraction > 0:
            say(f"Conciseness: {nodes} nodes in all (the units of every layer), {earned:.0%} of the conciseness "
                f"marks (full marks at {full:g} nodes or fewer).")
        else:
            say(f"Conciseness ({nodes} nodes) earns marks only for a model that earns performance marks.")
        fraction = (1 - c.weight) * fraction + c.weight * earned
    a.fraction = round(fraction, 6)
    return a


def wants_retraining(task: Task, evaluation: Evaluation) -> bool:
    """Whether re-training this model's recipe could change its grade on ``task`` (measuring asks, before
    re-training): a model a notebook trained by model.fit, with exactly the task's layers, whose own run missed
    the pass threshold of a task whose recipes are re-trained (``Task.retrained``, K > 0 from calibration)."""
    th = task.threshold(task.metric) if task.retrained else None
    if th is None or th.misses is None or th.misses.retrainings <= 0:
        return False
    if evaluation.made_by != "fit":
        return False
    a = assess(task, evaluation.own())
    return a.architecture_ok and a.metric == task.metric and 0 <= a.metric_fraction < 1 \
        and "training_refused" not in a.metrics


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 < 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


STOPPED_WORDS = {
    "count": "the grader's limit of {limit} re-trainings per student was reached",
    "budget": "the grader's re-training time of {budget:.0f} s per student ran out",
    "error": "a re-training failed ({error})",
}


def _recipe(task: Task, evaluation: Evaluation, a: Assessment, outcome: str, say) -> None:
    """Credit and words for the re-trainings of the model's recipe, when its own run missed the pass threshold
    (``wants_retraining``): the best of the own run and the first K re-trainings counts."""
    r = evaluation.retraining
    th = task.threshold(a.metric)
    if not r or outcome == "pass" or not a.architecture_ok or a.metric != task.metric or not task.retrained \
            or not r.for_dataset(task.dataset):
        return
    metric, label, rel = a.metric, METRIC_LABELS[a.metric], relation(a.metric)
    own = fmt_value(metric, a.value)
    m = th.misses
    if m is not None:
        missed = m.missed_partial if outcome in ("baseline", "fail") else m.missed_pass
        low = outcome in ("baseline", "fail")
        if missed:
            where = "ends below the partial-credit threshold" if low else "misses the pass threshold"
            say(f"Training is random: the reference solution itself {where}, as your run did, in {missed} of its "
                f"{m.runs} calibration runs, so the grader grades your recipe, not this one run of it.")
        else:  # no calibration run ended so low: randomness is still why the recipe, not the run, is graded
            where = "ended below the partial-credit threshold" if low else "missed the pass threshold"
            say(f"Training is random, so the grader grades your recipe, not this one run of it (the reference "
                f"solution {where} in none of its {m.runs} calibration runs).")
    if r.refused:
        say(f"Your recipe was not re-trained: {r.refused}. The grade is your own run's ({own}).")
        return
    measured = [run.metrics[task.dataset] for run in r.runs[: m.retrainings if m is not None else None]
                if metric in run.metrics.get(task.dataset, {})]
    values = [float(run[metric]) for run in measured]
    if not values:
        say(f"Your recipe could not be re-trained ({r.error or 'no re-training finished'}); the grade is "
            f"your own run's ({own}).")
        return
    judged = [judge(task, metric, v, run) for v, run in zip(values, measured)]
    best = max(range(len(values)), key=lambda i: (judged[i][0], goodness(metric, values[i])))
    fraction = judged[best][0]
    shown = ", ".join(fmt_value(metric, v) for v in values)
    trained = f"{r.trained_epochs} epochs (the grader's cap) instead of your {r.epochs}" \
        if r.trained_epochs and r.trained_epochs < (r.epochs or 0) else ""
    recipe = r.recipe if r.recipe is not None else "as the notebook trained it"
    words = (f"Your recipe ({recipe}), re-trained by the grader "
             f"{'once' if len(values) == 1 else f'{len(values)} times'} with fresh seeds"
             f"{', for ' + trained if trained else ''}, "
             f"reached a {label} of {shown}")
    if fraction >= 1:
        words += (f": the {_ordinal(best + 1)} re-training reached the pass threshold ({rel} "
                  f"{fmt_value(metric, th.passing)}), so your recipe earns full credit.")
    elif fraction > a.metric_fraction:
        words += (f": partial credit for your recipe ({rel} {fmt_value(metric, th.partial)}); full credit needs "
                  f"{rel} {fmt_value(metric, th.passing)}.")
    else:
        words += ": no more credit than your own run."
    if fraction < 1 and r.stopped in STOPPED_WORDS:
        words += " Re-training stopped early: " + STOPPED_WORDS[r.stopped].format(
            limit=r.limit, budget=r.budget, error=r.error) + "."
    say(words)
    a.metrics["retrainings"] = float(len(values))
    a.metrics[f"retrained_{metric}"] = values[best]
    a.metric_fraction = max(a.metric_fraction, fraction)


#: a fit whose weights moved less than this (relative) did not train the model
MIN_WEIGHT_CHANGE = 1e-4


def training_refusal(task: Task, provenance: Provenance | None) -> str | None:
    """Why a model from a notebook earns no metric credit for a task that asks for training, in one
    sentence; None when it may (or when nothing is known: a submitted file is graded as submitted)."""
    if task.training != "fit" or provenance is None or provenance.made_by not in ("fit", "predict"):
        return None
    if provenance.made_by == "predict":
        return (f"No credit for the {METRIC_LABELS[task.metric]}: this model was never trained in the notebook "
                f"(it was only used by predict), and task {task.id} asks for a network trained by model.fit; "
                "setting weights by hand is the exercise of 1b only.")
    lr = provenance.learning_rate
    if isinstance(lr, (int, float)) and lr <= 0:
        return (f"No credit for the {METRIC_LABELS[task.metric]}: the model was fitted with a learning rate of "
                f"{lr:g}, which cannot change its weights: train it with a positive learning rate.")
    if task.metric in METRICS_FOR_KIND["classes"] and provenance.classes == 1:
        return (f"No credit for the {METRIC_LABELS[task.metric]}: the model was fitted on points of one class only, "
                "and a model that always answers that class is right on every one of them: train it on points of "
                "both classes (to_categorical(y) of the data the task names).")
    moved = provenance.weight_change
    if isinstance(moved, (int, float)) and moved < MIN_WEIGHT_CHANGE:
        return (f"No credit for the {METRIC_LABELS[task.metric]}: model.fit left the model's weights as they "
                "were, so its results are not the work of training: train it (a positive learning rate, "
                "enough epochs).")
    return None


def _judge_metric(task: Task, metric: str, value: float, evaluation: Evaluation, a: Assessment, say) -> None:
    """The metric's share of the credit and its words, by the task's thresholds or its marks curve.

    One sentence says where the value stands; outputs in the wrong order replace it (a swapped model has
    learned the classes, so "has not learned" would contradict the fix); then the re-trainings of the recipe
    (thresholds only) and the task's hint, unless the fault lies elsewhere (the network or the order)."""
    metrics = evaluation.measured_on(task.dataset).metrics
    label, shown, rel = METRIC_LABELS[metric], fmt_value(metric, value), relation(metric)
    a.metric, a.value = metric, value
    curve = task.curve if metric == task.metric else None
    if curve is not None:
        zero = [x for x, y in curve.points if y == 0]
        a.threshold = {"metric": metric, "pass": curve.full_at(),
                       "partial": zero[-1] if zero else curve.points[0][0],
                       "source": f"the marks curve of the spec ({curve.describe(lambda v: fmt_value(metric, v))})",
                       "higher_is_better": METRICS[metric]}

        def credit(v: float) -> tuple[float, str]:
            if _at_baseline(metric, v, metrics):
                return 0.0, "baseline"
            fraction = round(curve(v), 6)
            return fraction, "pass" if fraction >= 1 else "partial" if fraction > 0 else "fail"
    else:
        th = task.threshold(metric)
        a.threshold = {"metric": metric, "pass": th.passing, "partial": th.partial, "source": th.source,
                       "higher_is_better": METRICS[metric]}

        def credit(v: float) -> tuple[float, str]:
            return judge(task, metric, v, metrics)
    a.metric_fraction, outcome = credit(value)
    swapped = metrics.get("accuracy_swapped")
    is_swapped = metric == "accuracy" and swapped is not None and value < 0.5 \
        and credit(float(swapped))[0] > a.metric_fraction
    if is_swapped:
        say(f"The {label} is {shown}, but with the two outputs the other way round it would be {swapped:.3f}: "
            "your outputs look swapped. The first output must be the probability of class 0 and the second of "
            "class 1 (the order to_categorical(y) gives: train on to_categorical(y), not on 1 - y); the grader "
            "marks what the model outputs, so fix the order and train or save the model again.")
    elif outcome == "baseline":
        say(f"The {label} is {shown}, no better than always answering the most common class "
            f"({metrics['majority_baseline']:.3f}): the model has not learned to separate the classes.")
    elif curve is not None:
        say(f"The {label} is {shown}: {a.metric_fraction:.0%} of the performance marks (full marks from "
            f"{fmt_value(metric, curve.full_at())}).")
    elif outcome == "pass":
        say(f"The {label} is {shown}, within the pass threshold ({rel} {fmt_value(metric, th.passing)}).")
    elif outcome == "partial":
        say(f"The {label} is {shown}: partial credit ({rel} {fmt_value(metric, th.partial)}); full credit "
            f"needs {rel} {fmt_value(metric, th.passing)}.")
    else:
        say(f"The {label} is {shown}, outside even the partial-credit threshold "
            f"({rel} {fmt_value(metric, th.partial)}; full credit needs {rel} {fmt_value(metric, th.passing)}).")
    if curve is None:
        _recipe(task, evaluation, a, outcome, say)
    if a.metric_fraction < 1 and task.hint and a.architecture_ok and not is_swapped:
        say(task.hint)


PREPROCESSING_WORDS = {
    "comma": "The scaling file separates its numbers with commas; numpy.savetxt writes spaces, and the course's "
             "check reads spaces. It was read anyway: save it with np.savetxt(name, s), without delimiter=','.",
    "transposed": "The scaling file holds a {inputs} x 2 array: it is transposed. It must be 2 x {inputs}, row 0 "
                  "the offsets and row 1 the scales (np.savetxt(name, np.array([offsets, scales]))). It was read "
                  "as its transpose.",
    "wrong_size": "The scaling file holds a {shape} array, but this model needs 2 x {inputs} (row 0 the offsets, "
                  "row 1 the scales), so it could not be applied: the model was measured on unscaled inputs.",
    "zero_scale": "A scale in row 1 of the scaling file is 0, and the inputs are divided by it, so it could not be "
                  "applied: the model was measured on unscaled inputs.",
    "not_finite": "The scaling file contains NaN or infinite values, so it could not be applied.",
    "not_numbers": "The scaling file is not a table of numbers (numpy.loadtxt cannot read it), so it could not be "
                   "applied: save it with np.savetxt(name, np.array([offsets, scales])).",
    "unreadable": "The scaling file could not be read, so it was not applied.",
}


def _preprocessing_sentences(report: dict | None, metrics: dict, a: Assessment, say, inputs) -> None:
    if not report:
        return
    shape = " x ".join(str(n) for n in report.get("shape", [])) or "?"
    for problem in report.get("problems", []):
        if problem == "missing":
            std, raw = metrics.get("accuracy_standardized"), metrics.get("accuracy")
            if std is not None and raw is not None and std >= raw + 0.15:
                say(f"No scaling file was submitted, but the model looks trained on scaled inputs: it scores "
                    f"{raw:.3f} on the raw inputs and {std:.3f} on standardised ones. Submit the scaling you "
                    f"trained with beside the model (a 2 x {inputs} array saved with numpy.savetxt: row 0 the "
                    "offsets, row 1 the scales).")
            continue
        say(PREPROCESSING_WORDS[problem].format(inputs=inputs, shape=shape))
    if report.get("applied"):
        a.metrics["scaling_applied"] = 1.0
