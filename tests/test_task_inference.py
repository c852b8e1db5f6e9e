"""Which task a model answers: exact architectures first, one task per model; and plots that show both classes."""
import base64
import functools
import io

import numpy as np
import pytest

from conftest import TUTORIAL6, small_model, task_of
from grader.evaluate import metrics as M
from grader.records import DatasetResult, Evaluation, Measurements, Provenance, Source
from grader.report import plots
from grader.score import score_student
from grader.assess import assess

# the hand-set weights of task 1b: relu(0.5x - 0.05) - relu(1.75x - 1.05) + relu(1.25x - 1.0) is the target
HAND_SET = (np.array([[0.5, 1.75, 1.25]]), np.array([-0.05, -1.05, -1.0]), np.array([1.0, -1.0, 1.0]))


@functools.cache
def _sheet_data():
    """The course's data generators and the task-1 target (the assignment's datasets.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tutorial6_datasets", TUTORIAL6 / "datasets.py")
    datasets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(datasets)
    return datasets


def _curve_model(hidden, seed=0):
    """An untrained task-1 network: one input, the given hidden layers, a linear output."""
    return small_model(hidden=hidden, inputs=1, outputs=(1, "linear"), seed=seed)


def _trained(hidden, epochs, seed=0):
    """A task-1 network trained on the sheet's data for a few epochs: the right layers, a poor fit."""
    datasets = _sheet_data()
    model = _curve_model(hidden, seed)
    model.compile(loss="mean_squared_error", optimizer="adam")
    x = datasets.training_x()
    model.fit(x, datasets.target(x), epochs=epochs, batch_size=32, verbose=0)
    return model


def _hand_set(hidden, offset=0.0):
    """A ReLU network whose first three units of every hidden layer compute the target exactly (1b's weights,
    passed on unchanged by the deeper layers), plus ``offset`` at the output: its mse is ``offset ** 2``."""
    model = _curve_model(hidden)
    dense = model.layers
    kernel, bias, out = HAND_SET
    for i, layer in enumerate(dense):
        w, b = (np.zeros_like(v) for v in layer.get_weights())
        if i == 0:
            w[:, :3], b[:3] = kernel, bias
        elif layer is dense[-1]:
            w[:3, 0], b[0] = out, offset
        else:
            w[:3, :3] = np.eye(3)
        layer.set_weights([w, b])
    return model


def _measure(evaluator, folder, models: dict) -> Measurements:
    """Each model saved under ``folder`` by its name (none names a task) and evaluated by the real worker,
    as a notebook's captures would be."""
    folder.mkdir(parents=True, exist_ok=True)
    evaluated = []
    for name, model in models.items():
        model.save(folder / name)
        evaluation = evaluator.evaluate(folder / name)
        evaluated.append((Source(name, evaluation.format, dataset="curve"), evaluation))
    return Measurements("s", [], [], [], {}, evaluated)


def _subset(measured: Measurements, names) -> Measurements:
    """The same measurements, with only the models called ``names``."""
    return Measurements(measured.student_id, [], [], [], {}, [(s, e) for s, e in measured.evaluated if s.name in names])


def test_a_mediocre_1e_network_is_graded_as_1e_not_1d(assignment, evaluator, tmp_path):
    # three hidden Dense(10, relu) with a held-out mse of about 5.8e-4 (a real student's 5.7e-4): outside
    # 1e's partial credit, yet within 1d's pass threshold, so 1d is the "better share of points"
    measured = _measure(evaluator, tmp_path, {"net.h5": _hand_set([(10, "relu")] * 3, offset=0.024)})
    evaluation = measured.evaluated[0][1]
    assert 5e-4 < evaluation.datasets["curve"].metrics["mse"] < 7e-4
    assert assess(assignment.task("1d"), evaluation).fraction > assess(assignment.task("1e"), evaluation).fraction

    result = score_student(assignment, measured)
    e = task_of(result, "1e")
    assert e.source == "net.h5" and e.inferred and "exactly" in e.message, e.message
    assert e.score == 2 and "The architecture matches the task." in e.message  # its layers; not its fit
    assert task_of(result, "1d").status == "missing"
    assert [f.task for f in result.files if f.name == "net.h5"] == ["1e"]


@pytest.fixture(scope="module")
def sheet_captures(evaluator, tmp_path_factory):
    """A sheet-style notebook's captures, in the order a student makes them: every task of part 1 with
    its own architecture, the 150-ReLU network first under-trained (15 epochs), then well fitted, and one
    exploratory network that is no task's (Dense(20, relu), a fair fit)."""
    return _measure(evaluator, tmp_path_factory.mktemp("captures"), {
        "capture-01.keras": _trained([(3, "relu")], 20),            # 1a
        "capture-02.keras": _hand_set([(3, "relu")]),               # 1b
        "capture-03.keras": _trained([(150, "relu")], 15),          # 1c, under-trained
        "capture-04.keras": _hand_set([(150, "relu")]),             # 1c, a good fit
        "capture-05.keras": _trained([(150, "tanh")], 5),           # 1d
        "capture-06.keras": _trained([(10, "relu")] * 3, 5),        # 1e
        "capture-07.keras": _trained([(10, "tanh")] * 3, 5),        # 1f
        "capture-08.keras": _hand_set([(20, "relu")], offset=0.04),  # no task's layers
    })


def test_each_task_gets_its_exact_architecture_model(assignment, sheet_captures):
    by_name = {s.name: e for s, e in sheet_captures.evaluated}
    # the trap: on performance alone the under-trained 150-ReLU model earns more as 1a than as 1c
    under = by_name["capture-03.keras"]
    assert assess(assignment.task("1a"), under).fraction > assess(assignment.task("1c"), under).fraction

    result = score_student(assignment, sheet_captures)
    expected = {"1a": "capture-01.keras", "1b": "capture-02.keras", "1c": "capture-04.keras",
                "1d": "capture-05.keras", "1e": "capture-06.keras", "1f": "capture-07.keras"}
    for tid, name in expected.items():
        t = task_of(result, tid)
        assert t.source == name and t.inferred and "The architecture matches the task." in t.message, (tid, t.message)
    assert task_of(result, "1b").status == "passed" and task_of(result, "1c").status == "passed"
    # the under-trained model is 1c's, never 1a's; the report names it beside 1c's counted model
    graded_as = {f.name: f.task for f in result.files}
    assert graded_as["capture-03.keras"] == "1c"
    assert "scored less: capture-03.keras" in task_of(result, "1c").message
    # a model that is no task's falls back to its performance, and never beats a model with the task's layers
    d = task_of(result, "1d")
    assert assess(assignment.task("1d"), by_name["capture-08.keras"]).fraction > d.score / d.max_score
    assert graded_as["capture-08.keras"] == "1d" and "Not counted: capture-08.keras" in d.message


def test_without_the_good_fit_the_under_trained_model_is_still_1c(assignment, sheet_captures):
    result = score_student(assignment, _subset(sheet_captures, {f"capture-0{i}.keras" for i in (1, 2, 3, 5, 6, 7)}))
    assert task_of(result, "1a").source == "capture-01.keras"
    c = task_of(result, "1c")
    assert c.source == "capture-03.keras" and c.score == 2, c.message  # the architecture's points only


def test_the_shared_1a_1b_architecture_is_told_apart(assignment, sheet_captures):
    # alone, the hand-set network is 1b (its fit is exact, like 1b's references) and the trained one 1a
    for name, tid, other in (("capture-02.keras", "1b", "1a"), ("capture-01.keras", "1a", "1b")):
        result = score_student(assignment, _subset(sheet_captures, {name}))
        assert task_of(result, tid).source == name and task_of(result, other).status == "missing"
    # together, one task each, whatever their order
    swapped = Measurements("s", [], [], [], {}, list(reversed(_subset(
        sheet_captures, {"capture-01.keras", "capture-02.keras"}).evaluated)))
    result = score_student(assignment, swapped)
    assert task_of(result, "1a").source == "capture-01.keras" and task_of(result, "1b").source == "capture-02.keras"


def test_the_assignment_is_optimal():
    import itertools
    import random

    from grader.score.match import _min_cost_assignment

    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 4)
        m = rng.randint(n, 6)
        cost = [[rng.randint(-5, 5) for _ in range(m)] for _ in range(n)]
        column = _min_cost_assignment(cost)
        assert len(set(column)) == n
        assert sum(cost[i][j] for i, j in enumerate(column)) == min(
            sum(cost[i][j] for i, j in enumerate(p)) for p in itertools.permutations(range(m), n))


def test_plot_sample_shows_every_class_and_is_deterministic():
    y = np.r_[np.zeros(1000), np.ones(2000)]  # sorted by class, as the generators emit them
    shown = M.plot_sample(y)
    assert len(shown) == M.PLOT_SAMPLE and len(set(shown.tolist())) == len(shown)
    assert np.bincount(y[shown].astype(int)).tolist() == [200, 400]  # in proportion
    assert np.array_equal(shown, M.plot_sample(y))
    assert set(y[shown[:20]]) == {0, 1}  # shuffled: neither class is drawn as one block over the other
    rare = np.r_[np.zeros(2950), np.ones(50)]
    assert np.bincount(rare[M.plot_sample(rare)].astype(int)).tolist() == [550, 50]  # a small class: all of it
    skewed = np.r_[np.zeros(2700), np.ones(300)]
    assert np.bincount(skewed[M.plot_sample(skewed)].astype(int)).tolist() == [450, 150]  # at least a fair share
    assert sorted(M.plot_sample(np.r_[np.zeros(5), np.ones(3)]).tolist()) == list(range(8))


def test_plot_extent_covers_the_points_and_the_dataset_extent():
    x = np.array([[-12.0, 3.0], [5.0, 11.0]])
    xmin, xmax, ymin, ymax = M.plot_extent([-10, 10, -10, 10], x)
    assert xmin < -12 and xmax == 10 and ymin == -10 and ymax > 11


def _pixels_near(png: bytes, colour: str, tol=0.08) -> int:
    import matplotlib.colors
    import matplotlib.image

    rgb = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    return int(np.sum(np.all(np.abs(rgb - matplotlib.colors.to_rgb(colour)) < tol, axis=-1)))


def test_decision_regions_show_both_classes_in_their_own_colours(assignment, evaluator, tmp_path):
    import keras

    datasets = _sheet_data()
    X, y = datasets.gen_xor_distribution(200, rng=np.random.default_rng(0))
    model = small_model(hidden=((8, "relu"), (8, "relu")))
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    model.fit(X, keras.utils.to_categorical(y, 2), epochs=10, batch_size=32, verbose=0)
    model.save(tmp_path / "xor.keras")
    evaluation = evaluator.evaluate(tmp_path / "xor.keras")
    assert np.array_equal(evaluator.evaluate(tmp_path / "xor.keras").datasets["xor"].plot["x"],
                          evaluation.datasets["xor"].plot["x"])  # the same model, the same picture
    for name, entry in evaluation.datasets.items():
        plot, ds = entry.plot, assignment.datasets[name]
        assert set(np.unique(plot["y"]).tolist()) == {0, 1}, name
        xmin, xmax, ymin, ymax = plot["extent"]
        assert xmin <= ds.extent[0] and xmax >= ds.extent[1] and ymin <= ds.extent[2] and ymax >= ds.extent[3]
        assert np.all((plot["x"][:, 0] >= xmin) & (plot["x"][:, 0] <= xmax)), name
        assert np.all((plot["x"][:, 1] >= ymin) & (plot["x"][:, 1] <= ymax)), name

    uri = plots.regions(evaluation.datasets["xor"].plot, assignment.datasets["xor"].extent, "2b")
    png = base64.b64decode(uri.removeprefix("data:image/png;base64,"))
    counts = [_pixels_near(png, c) for c in plots.CLASS_COLOURS]
    assert min(counts) > 200, counts  # both classes are on the picture, each in its own colour


def test_a_model_of_no_tasks_layers_stays_with_the_likeliest_datasets_tasks(assignment):
    from grader import keras_io
    from grader.score.match import assign_tasks

    # a 2c attempt with two hidden layers, not three (no task's layers), trained on data likeliest to be 2c's that
    # the scale-1 circular data of 2a could also have given: on 2a's data it happens to earn more than on 2c's
    info = keras_io.describe(small_model(hidden=((6, "relu"), (6, "relu"))))
    baseline = {"majority_baseline": 0.667}
    evaluation = Evaluation(info=info, provenance=Provenance("fit"), datasets={
        "circle": DatasetResult({"accuracy": 0.9, **baseline}),
        "circle_overlap": DatasetResult({"accuracy": 0.75, "train_accuracy": 0.78, "gap": 0.03, **baseline})})
    fraction = {tid: assess(assignment.task(tid), evaluation).fraction for tid in ("2a", "2c")}
    assert fraction["2a"] > fraction["2c"] > 0  # the premise: on performance alone it is a 2a

    (match,) = assign_tasks(assignment, [(evaluation, ["circle_overlap", "circle"])])
    assert match.task_id == "2c" and not match.exact, match.reason
    (match,) = assign_tasks(assignment, [(evaluation, ["circle", "circle_overlap"])])
    assert match.task_id == "2a"  # where 2a's data are the likelier, it is graded as 2a, as before
