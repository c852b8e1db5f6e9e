"""Plots: the fast drawing draws what matplotlib's plain drawing draws, a plot shows its own model, and a
kept plot is the picture its key names."""
import io
import shutil
import stat

import numpy as np
import pytest

from conftest import ROOT, small_model
from grader.records import Evaluation
from grader.report import cache, plots
from grader.spec import import_reference

DEMO = ROOT / "submissions" / "tutorial6"


def _decode(png: bytes) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(png), format="png")


def _regions_data(seed=0, boundary=5.0, n=600, extent=(-10, 10, -10, 10)):
    """A circle classifier's plot data, as the evaluation worker makes it (``evaluate.metrics``)."""
    from grader.evaluate import metrics as M

    rng = np.random.default_rng(seed)
    r = np.r_[rng.uniform(0, 4, n // 3), rng.uniform(6, 9, n - n // 3)]
    angle = rng.uniform(0, 2 * np.pi, n)
    x = np.column_stack([r * np.cos(angle), r * np.sin(angle)])
    y = (r > 5).astype(np.int8)
    full = M.plot_extent(extent, x)
    grid = M.grid_points(full)
    radius = np.hypot(grid[:, 0], grid[:, 1])
    p = (1 / (1 + np.exp(-(radius - boundary)))).reshape(M.PLOT_GRID, M.PLOT_GRID)
    pred = (np.hypot(x[:, 0], x[:, 1]) > boundary).astype(np.int8)
    return {"grid": p.astype(np.float16), "extent": full, "x": x.astype(np.float32), "y": y, "pred": pred}


def _curve_data(wiggle=0.0):
    x = np.linspace(0, 1, 400).astype(np.float32)
    return {"x": x, "y_pred": (0.1 + wiggle * np.sin(20 * x)).astype(np.float32)}


def _truth(x):
    return np.clip(0.5 * (x - 0.1), 0, None)


def _difference(a: np.ndarray, b: np.ndarray, block: int = 8) -> float:
    """How two pictures of one size differ: the largest difference of the mean colour of any ``block`` x
    ``block`` square, once aligned at the best shift of up to a pixel.  (A crop at whole pixels, where savefig's
    tight box falls between pixels, moves everything by under a pixel, and Agg snaps each marker to the pixel
    grid on its own: the same picture differs by a few hundredths, a slightly other curve by 0.17.)"""
    h, w = a.shape[:2]
    best = None
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            pa = a[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0), :3]
            pb = b[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0), :3]
            mean = float(np.abs(pa - pb).mean())
            if best is None or mean < best[0]:
                best = (mean, pa, pb)
    _, pa, pb = best
    hh, ww = (pa.shape[0] // block) * block, (pa.shape[1] // block) * block

    def squares(img):
        return img[:hh, :ww].reshape(hh // block, block, ww // block, block, 3).mean(axis=(1, 3))

    return float(np.abs(squares(pa) - squares(pb)).max())


SAME = 0.12  # see _difference


@pytest.mark.parametrize("kind", ["curve", "regions"])
def test_kept_figures_draw_what_a_fresh_figure_and_savefig_draw(kind):
    shown = [plots.curve_plot(_curve_data(w), _truth, "task 1c") for w in (0.0, 0.05, 3.0)] if kind == "curve" else \
        [plots.regions_plot(_regions_data(seed, b), (-10, 10, -10, 10), "task 2a (held-out points)")
         for seed, b in ((0, 5.0), (1, 3.0), (2, 20.0))]
    fast = [_decode(p.png()) for p in shown]
    plain = [_decode(p.png(plain=True)) for p in shown]
    for i, (f, p) in enumerate(zip(fast, plain, strict=True)):
        assert f.shape == p.shape  # savefig's tight box, to the pixel
        assert _difference(f, p) < SAME, (kind, i)  # the same picture
    assert fast[0].shape == plain[1].shape and _difference(fast[0], plain[1]) > SAME  # another model: not the same


def test_a_plot_does_not_depend_on_what_was_drawn_before():
    a = plots.regions_plot(_regions_data(0), (-10, 10, -10, 10), "task 2a (held-out points)")
    b = plots.regions_plot(_regions_data(1, 7.0), (-5, 5, -5, 5), "task 2b (held-out points)")
    c = plots.curve_plot(_curve_data(2.0), _truth, "task 1c")
    first = a.png()
    for other in (b, c, b):
        other.png()
    assert a.png() == first
    plots._kept.clear()  # a fresh figure
    assert a.png() == first
    # another model whose legend says the same (the same counts): its legend is the one kept, its regions its own
    data = _regions_data(0)
    data["grid"] = np.clip(data["grid"].astype(np.float32) * 0.8 + 0.1, 0, 1).astype(np.float16)
    same_words = plots.regions_plot(data, (-10, 10, -10, 10), "task 2a (held-out points)")
    after_a = same_words.png()
    assert after_a != first
    plots._kept.clear()
    assert same_words.png() == after_a


def test_keys_name_what_a_plot_shows():
    data = _regions_data(0)
    key = plots.regions_plot(data, (-10, 10, -10, 10), "task 2a").key
    assert plots.regions_plot(_regions_data(0), (-10, 10, -10, 10), "task 2a").key == key
    assert plots.regions_plot(data, (-10, 10, -10, 10), "task 2c").key != key  # another title
    changed = dict(data, grid=data["grid"].copy())
    changed["grid"][60, 60] += 0.25  # one pixel of the model's regions
    assert plots.regions_plot(changed, (-10, 10, -10, 10), "task 2a").key != key
    assert plots.curve_plot(_curve_data(0.1), _truth, "t").key != plots.curve_plot(_curve_data(0.2), _truth, "t").key
    assert plots.curve_plot(_curve_data(0.1), _truth, "t").key != \
        plots.curve_plot(_curve_data(0.1), lambda x: _truth(x) + 1e-3, "t").key  # another true function


def test_another_matplotlib_draws_every_plot_afresh(monkeypatch):
    """A kept plot is the picture this matplotlib draws: after an upgrade, no kept PNG of the old one is reused."""
    import importlib

    import matplotlib

    key = plots.regions_plot(_regions_data(0), (-10, 10, -10, 10), "task 2a").key
    monkeypatch.setattr(matplotlib, "__version__", matplotlib.__version__ + ".post1")
    try:
        upgraded = importlib.reload(plots)
        assert upgraded.regions_plot(_regions_data(0), (-10, 10, -10, 10), "task 2a").key != key
    finally:
        monkeypatch.undo()
        importlib.reload(plots)
    assert plots.regions_plot(_regions_data(0), (-10, 10, -10, 10), "task 2a").key == key


def test_the_cache_keeps_plots_owner_only_draws_each_once_and_forgets_unused_ones(tmp_path):
    folder = tmp_path / "out" / cache.FOLDER
    kept = cache.PlotCache(folder)
    shown = [plots.regions_plot(_regions_data(i), (-10, 10, -10, 10), "task 2a") for i in range(3)]
    pngs = [kept.png(p) for p in shown]
    assert kept.drawn == 3 and kept.reused == 0
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
    again = cache.PlotCache(folder)  # a later run
    assert [again.png(p) for p in shown[:2]] == pngs[:2] and again.drawn == 0 and again.reused == 2
    assert again.forget_unused() == 1  # the third plot no page of this run showed
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{p.key}.png" for p in shown[:2])
    with pytest.raises(ValueError):
        kept.get("../gradebook")  # a key is a digest, never a path


@pytest.mark.slow  # starts processes
def test_missing_plots_drawn_on_several_processes_are_those_drawn_here(tmp_path):
    shown = [plots.regions_plot(_regions_data(i % 7, 3 + i % 5), (-10, 10, -10, 10), f"task {i % 3}")
             for i in range(cache.POOL_FROM)] + \
        [plots.curve_plot(_curve_data(i / 10), _truth, "task 1c") for i in range(cache.POOL_FROM // 4)]
    pooled = cache.PlotCache(tmp_path / "pooled")
    pooled.draw_missing(shown, workers=2)
    assert pooled.drawn == len({p.key for p in shown})
    for p in shown[::9]:
        assert pooled.get(p.key) == p.png()  # another process, the same bytes


def test_a_plot_shows_its_model(assignment, evaluator, tmp_path):
    """The reference's plot and a constant model's differ where the models differ: the regions' shading and
    the curve."""
    zero = small_model(hidden=((4, "relu"), (4, "relu")))
    zero.set_weights([np.zeros_like(w) for w in zero.get_weights()])  # P(class 1) = 0.5 everywhere
    zero.save(tmp_path / "zero2a.h5")
    flat = small_model(hidden=((150, "relu"),), inputs=1, outputs=(1, "linear"))
    flat.set_weights([np.zeros_like(w) for w in flat.get_weights()])  # y = 0
    flat.save(tmp_path / "zero1c.h5")
    for task, good, constant, dataset in (("2a", DEMO / "alice" / "model.h5", tmp_path / "zero2a.h5", "circle"),
                                          ("1c", DEMO / "alice" / "1c.h5", tmp_path / "zero1c.h5", "curve")):
        ds = assignment.datasets[dataset]
        drawn = []
        for path in (good, constant):
            entry = evaluator.evaluate(path).datasets[dataset]
            plot = (plots.regions_plot(entry.plot, ds.extent, f"task {task}") if ds.kind == "classes" else
                    plots.curve_plot(entry.plot, import_reference(assignment, ds.function), f"task {task}"))
            drawn.append(_decode(plot.png()))
        reference, flat_image = drawn
        assert reference.shape == flat_image.shape  # the same layout: the same size
        assert _difference(reference, flat_image) > SAME, task  # not the same picture
        if dataset == "circle":  # the constant model's regions are one shade: no white class-0 region
            grey = plots.REGION_SHADES(0.5)[:3]
            assert np.sum(np.all(np.abs(flat_image[..., :3] - grey) < 0.02, axis=-1)) > \
                10 * np.sum(np.all(np.abs(reference[..., :3] - grey) < 0.02, axis=-1))


def test_plots_drawn_by_a_worker_are_the_pages_plots(assignment, evaluator, tmp_path):
    """``GradingSession.plots`` (a batch worker) draws, from the scored result, exactly the plots the student's
    page shows, under the keys the page asks for."""
    from grader.intake import collect
    from grader.report import Reporter
    from grader.score import score_student
    from grader.session import Events, GradingSession

    shutil.copytree(DEMO / "bob", tmp_path / "subs" / "bob")
    sub = collect(tmp_path / "subs", assignment)[0]
    told = []
    events = Events()
    events.evaluated = told.append
    session = GradingSession(assignment, evaluator.seeds, evaluator=evaluator)
    measured = session.measure(sub, events)
    assert told and [id(e) for e in told] == [id(e) for _, e in measured.evaluated]  # each model, as measured
    drawn = session.plots(session.score(measured, events), events)
    reporter = Reporter(assignment, tmp_path / "out", keep_plots=True)
    reporter.plots.add(drawn)
    before = reporter.plots.drawn
    reporter.add(score_student(assignment, measured))
    assert reporter.plots.drawn == before and reporter.plots.reused == len(drawn) == 3  # 1a, 1c and 2a
    page = (tmp_path / "out" / "students" / "bob.html").read_text()
    assert all(plots.data_uri(png) in page for png in drawn.values())


def test_one_kept_figure_serves_every_task_and_draws_each_title():
    plots._kept.clear()
    data = _curve_data(0.5)
    shown = [plots.curve_plot(data, _truth, f"task 1{c}") for c in "acd"]
    drawn = [p.png() for p in shown]
    assert len(plots._kept) == 1  # the title is drawn over the kept background, not kept in it
    assert len(set(drawn)) == 3  # each task's own title
    for plot, png in zip(shown, drawn, strict=True):
        plots._kept.clear()
        assert plot.png() == png  # what a fresh figure draws


def test_warming_up_makes_each_layouts_figure_once_and_changes_no_picture(assignment):
    """``PlotWarmUp`` (a worker, while a notebook runs) draws the first plot of each layout the measured models
    show, once; the plots drawn after it are those a fresh figure draws, and bad plot data is not its error."""
    curve, regions = _curve_data(0.3), _regions_data(2)
    evaluation = Evaluation.from_json({"datasets": {
        "curve": {"plot": curve}, "circle": {"plot": regions}, "xor": {"metrics": {}},
        "ring": {"plot": {"grid": "not an array"}}, "no such dataset": {"plot": curve}}})
    shown = [cache.plot_of(assignment, "1c", "curve", curve), cache.plot_of(assignment, "2a", "circle", regions)]
    plots._kept.clear()
    fresh = [p.png() for p in shown]
    plots._kept.clear()
    warm = cache.PlotWarmUp(assignment)
    warm.evaluated(evaluation)
    warm.evaluated(evaluation)  # another model of the same layouts: nothing more to make
    warm.finish()
    assert warm.drawn == 2 and {k[0] for k in plots._kept} == {"curve", "regions"}
    assert [cache.layout_of(assignment, "curve", curve), cache.layout_of(assignment, "circle", regions)] == \
        [p.layout for p in shown]  # what the warm-up looks for without making the plot
    assert [p.png() for p in shown] == fresh
    assert len(plots._kept) == 2  # the student's plots were drawn on the figures the warm-up made


def test_the_grading_command_imports_matplotlib_and_calibration_only_when_it_uses_them():
    """``grade`` starts its first kernel after the API's imports: the plots' matplotlib and the other commands'
    modules wait until they are used, and the API still has every function."""
    import subprocess
    import sys

    code = ("import sys, grader.api as api\n"
            "early = sorted(m for m in ('matplotlib', 'grader.calibrate', 'grader.check', 'grader.kit') if m in sys.modules)\n"
            "from grader.api import check, calibrate, build_kit, export\n"
            "print(early, callable(check) and callable(calibrate) and callable(build_kit) and callable(export))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.stdout.split() == ["[]", "True"], done.stderr[-2000:]
