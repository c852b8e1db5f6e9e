"""Shared fixtures: the real Tutorial 6 spec, a real evaluation worker, real trained models."""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # training in the tests: the fast backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL6 = ROOT / "reference" / "tutorial6"
SHARED = ROOT.parent / "shared"
TEST_SECRET = "test-secret"


@pytest.fixture(autouse=True)
def same_cell_ids(monkeypatch):
    """Notebooks a test writes get the same cell ids on every run (nbformat draws random ones): the grader
    seeds a run from the submission's bytes, so a test hands in the same bytes, and trains on the same seed,
    every time (random ids gave the Colab Drive test another seed each run, and one in nine got stuck)."""
    import itertools

    import nbformat.v4.nbbase

    ids = itertools.count(1)
    monkeypatch.setattr(nbformat.v4.nbbase, "random_cell_id", lambda: f"cell-{next(ids)}")


@pytest.fixture(scope="session")
def assignment():
    from grader.spec import load_assignment

    return load_assignment(TUTORIAL6)


@pytest.fixture(scope="session")
def evaluator(assignment):
    """One real evaluation worker (spawned, memory-capped) shared by the tests."""
    from grader.evaluate import Evaluator, dataset_seeds

    with Evaluator(assignment, dataset_seeds(assignment, TEST_SECRET)) as ev:
        yield ev


@pytest.fixture(scope="session")
def reference_models(assignment):
    """Every task's reference, trained once with its calibrated seed as calibration trains it (the fused fit,
    Keras' semantics in one compiled program): task id -> (model, (x, y))."""
    from grader.execute import fused_fit
    from grader.spec import import_reference

    ours = not fused_fit.installed() and fused_fit.install()
    try:
        return {t.id: import_reference(assignment, t.reference)(t.reference_seed)
                for t in assignment.model_tasks()}
    finally:
        if ours:
            fused_fit.uninstall()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, reference_models):
    """The reference models saved as <task>.h5."""
    d = tmp_path_factory.mktemp("reference-models")
    for tid, (model, _) in reference_models.items():
        model.save(d / f"{tid}.h5")
    return d


def real_file(name: str) -> Path:
    path = SHARED / "real" / name
    if not path.is_file():
        pytest.skip(f"{path} is not available (../shared is absent)")
    return path


def _bubblewrap() -> bool:
    from grader.execute.sandbox import bwrap_path

    return bool(bwrap_path())


#: tests that run student code in the real sandbox (bubblewrap)
needs_sandbox = pytest.mark.skipif(not _bubblewrap(), reason="bubblewrap is not installed (.ci/run installs it)")


def small_model(hidden=((4, "relu"),), inputs=2, outputs=(2, "softmax"), seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((inputs,))] +
                             [keras.layers.Dense(u, activation=a) for u, a in hidden] +
                             [keras.layers.Dense(outputs[0], activation=outputs[1])])
    return model


def grade_one(assignment, evaluator, folder: Path, student="s"):
    from grader.intake import collect
    from grader.session import grade_student

    subs = {s.student_id: s for s in collect(folder, assignment)}
    return grade_student(assignment, subs[student], evaluator)


def task_of(result, tid):
    return next(t for t in result.tasks if t.id == tid)


#: fixtures that train networks, start the evaluation worker or grade a class: their tests are the slow tier
SLOW_FIXTURES = {"model_dir", "reference_models", "evaluator", "hostile_class", "graded", "graded_demo", "klass",
                 "uninterrupted"}
#: modules whose tests run notebooks in the sandbox or whole batches
SLOW_MODULES = {"test_notebooks", "test_security", "test_engines", "test_student_files", "test_validity",
                "test_keras2", "test_hostile_keras2", "test_keras2_callbacks",
                "test_kit", "test_exports", "test_workflow",
                "test_commands", "test_gradescope", "test_cli_reports", "test_batch", "test_retrain", "test_postgres",
                "test_override", "test_check", "test_coursework", "test_classwide", "test_output_safety",
                "test_hostile", "test_grading", "test_task_inference", "test_fused", "test_colab", "test_course_tools",
                "test_hostile_kernel", "test_hostile_memory", "test_text_controls", "test_identical_work",
                "test_isolation_probe", "test_budget", "test_pages_browser", "test_serve_browser",
                "test_rescore_fresh", "test_serve_hostile_work", "test_cell_output", "test_real_code",
                "test_override_ids", "test_saved_names",
                "test_hostile_session", "test_field_kit", "test_field_gradescope", "test_hostile_3",
                "test_records_stored", "test_real_code_2", "test_hostile_4", "test_field_root",
                "test_real_code_3", "test_keras2_executor"}


def pytest_collection_modifyitems(items):
    """Mark the slow tier (``make test-fast`` runs the rest in well under two minutes), and order the modules
    costliest first (``tests/costs.py``; each module's tests keep their order): ``make test``'s processes,
    which take whole modules in this order (``--no-loadscope-reorder``), then end close together."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    import costs

    table = costs.load()
    order = {item.module.__name__: -costs.seconds(table, item.module.__name__) for item in items}
    items.sort(key=lambda item: order[item.module.__name__])  # stable: a module's tests keep their order


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains networks, runs notebooks in the sandbox or grades a whole "
                                       "class (make test-fast skips it)")


#: how long a page waits for a navigation or an action: Playwright's 30 s is not a busy CI machine's
PATIENCE_MS = 300_000


class PatientBrowser:
    """A Playwright browser whose pages and contexts wait ``PATIENCE_MS`` (a hang still fails, later)."""

    def __init__(self, browser):
        self._browser = browser

    def new_page(self, **kw):
        page = self._browser.new_page(**kw)
        page.set_default_timeout(PATIENCE_MS)
        return page

    def new_context(self, **kw):
        context = self._browser.new_context(**kw)
        context.set_default_timeout(PATIENCE_MS)
        return context

    def __getattr__(self, name):
        return getattr(self._browser, name)
