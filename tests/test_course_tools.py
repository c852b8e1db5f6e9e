"""The course's tools.py, whole: every function the sheet and its tutorials use, with the course's signatures and
the course's draws from NumPy's global generator; a student's own tools.py runs, and the grader's stand-in only
adds what it lacks."""
import inspect

import nbformat
import numpy as np
import pytest

from conftest import grade_one, needs_sandbox, task_of
from grader.spec import import_reference


def tool(assignment, name):
    return import_reference(assignment, f"datasets:{name}")


def test_the_course_signatures(assignment):
    def defaults(name):
        return {k: p.default for k, p in inspect.signature(tool(assignment, name)).parameters.items()}

    assert defaults("gen_sample_grid") == {"npx": 200, "npy": 200, "limit": 1}
    assert defaults("get_cov") == {"sdx": 1.0, "sdy": 1.0, "rotangdeg": 0.0}
    circular = defaults("gen_circular_distribution")
    assert list(circular)[:3] == ["n", "scale", "scale_ellipse"] and circular["scale_ellipse"] == 1
    assert list(defaults("gen_simple_circular_distribution"))[:2] == ["n", "scale"]


def test_gen_sample_grid_is_the_meshgrid_as_rows(assignment):
    grid = tool(assignment, "gen_sample_grid")
    Xgrid, x1line, x2line = grid()
    assert Xgrid.shape == (40000, 2)
    np.testing.assert_array_equal(x1line, np.linspace(-1, 1, 200))
    np.testing.assert_array_equal(x2line, np.linspace(-1, 1, 200))

    Xgrid, x1line, x2line = grid(npx=3, npy=2, limit=10)
    np.testing.assert_array_equal(x1line, [-10, 0, 10])
    np.testing.assert_array_equal(x2line, [-10, 10])
    # x1 varies fastest: the rows of meshgrid(x1line, x2line), one grid row after another
    np.testing.assert_array_equal(Xgrid, [[-10, -10], [0, -10], [10, -10], [-10, 10], [0, 10], [10, 10]])

    Xgrid, x1line, x2line = grid(4, 5, [0, 3, -2, 2])  # a list of bounds: [x1min, x1max, x2min, x2max]
    np.testing.assert_array_equal(x1line, [0, 1, 2, 3])
    np.testing.assert_array_equal(x2line, [-2, -1, 0, 1, 2])
    assert Xgrid.shape == (20, 2)
    np.testing.assert_array_equal(Xgrid.reshape(5, 4, 2)[:, :, 0], np.tile(x1line, (5, 1)))  # an image's rows
    np.testing.assert_array_equal(Xgrid.reshape(5, 4, 2)[:, :, 1], np.tile(x2line[:, None], (1, 4)))


def test_get_cov_rotates_the_diagonal(assignment):
    get_cov = tool(assignment, "get_cov")
    np.testing.assert_allclose(get_cov(), np.eye(2))
    np.testing.assert_allclose(get_cov(0.4, 0.1, -45), [[0.25, -0.15], [-0.15, 0.25]], atol=1e-12)
    np.testing.assert_allclose(get_cov(0.4, 0.1, 45), [[0.25, 0.15], [0.15, 0.25]], atol=1e-12)
    np.testing.assert_allclose(get_cov(2.0, 0.5, 90), np.diag([0.5, 2.0]), atol=1e-12)  # a quarter turn swaps
    c = get_cov(3.0, 1.0, 30)
    np.testing.assert_allclose(np.linalg.eigvalsh(c), [1.0, 3.0])
    np.testing.assert_allclose(c @ [np.cos(np.pi / 6), np.sin(np.pi / 6)], 3 * np.array([np.cos(np.pi / 6),
                                                                                         np.sin(np.pi / 6)]))


def _course_rings(rings, scale):
    """The course's draws, written out from the description: every ring's radii as (count, 1) normals, then every
    ring's angles as (count, 1) uniforms, from NumPy's global generator."""
    radii = [np.random.normal(radius, scale, (count, 1)) for count, radius in rings]
    angles = [np.random.uniform(0, 2 * np.pi, (count, 1)) for count, _ in rings]
    return np.vstack([np.hstack([r * np.cos(t), r * np.sin(t)]) for r, t in zip(radii, angles)])


def test_a_students_seed_gives_the_courses_points(assignment):
    simple = tool(assignment, "gen_simple_circular_distribution")
    np.random.seed(0)
    X, y = simple(100)
    np.random.seed(0)
    expected = _course_rings([(33, 0), (67, 5)], 1)
    np.testing.assert_array_equal(X, expected)
    np.testing.assert_array_equal(y, [0] * 33 + [1] * 67)
    after = np.random.random()  # the global generator is left where the course's code leaves it
    np.random.seed(0)
    _course_rings([(33, 0), (67, 5)], 1)
    assert np.random.random() == after

    np.random.seed(7)
    X, y = simple(30, scale=2)
    np.random.seed(7)
    np.testing.assert_array_equal(X, _course_rings([(10, 0), (20, 5)], 2))

    ring = tool(assignment, "gen_circular_distribution")
    np.random.seed(3)
    X, y = ring(500, scale=1, scale_ellipse=2)
    np.random.seed(3)
    expected = _course_rings([(71, 2), (286, 8), (143, 5)], 1)  # a = 71, c = 286 (class 0), b = 143 (class 1)
    np.testing.assert_allclose(X, expected * [2, 0.5], rtol=0, atol=0)
    np.testing.assert_array_equal(y, [0] * 357 + [1] * 143)


def test_xor_draws_its_four_clusters_in_order_with_the_courses_covariances(assignment):
    xor, get_cov = tool(assignment, "gen_xor_distribution"), tool(assignment, "get_cov")
    np.random.seed(1)
    X, y = xor(10)
    np.random.seed(1)
    c0, c1 = get_cov(0.4, 0.1, -45), get_cov(0.4, 0.1, 45)
    expected = np.vstack([np.random.multivariate_normal([-2.3, -2.3], c0, 2),
                          np.random.multivariate_normal([2.3, 2.3], c0, 2),
                          np.random.multivariate_normal([-2.3, 2.3], c1, 2),
                          np.random.multivariate_normal([2.3, -2.3], c1, 4)])
    np.testing.assert_array_equal(X, expected)
    np.testing.assert_array_equal(y, [0] * 4 + [1] * 6)


def test_the_graders_own_draws_keep_the_calibrated_order(assignment):
    """Held-out data and the calibration's reference runs draw from a seeded Generator ring by ring (radii, then
    angles, per ring): the calibration's recorded runs stay the runs these generators give."""
    simple = tool(assignment, "gen_simple_circular_distribution")
    X, _ = simple(200, rng=np.random.default_rng(1006))
    rng = np.random.default_rng(1006)
    parts = []
    for count, radius in [(67, 0), (133, 5)]:
        r, t = rng.normal(radius, 1, count), rng.uniform(0, 2 * np.pi, count)
        parts.append(np.column_stack([r * np.cos(t), r * np.sin(t)]))
    np.testing.assert_array_equal(X, np.vstack(parts))


# -- in the sandbox: the student's own tools.py, completed ----------------------------------------------------

OWN_TOOLS = '''import numpy as np

def my_helper():
    return 42

def gen_simple_circular_distribution(n=100, scale=1):
    X = np.zeros((n, 2))
    X[n // 2:] = 5
    return X, (np.arange(n) >= n // 2).astype(float)
'''

USES_TOOLS = """import numpy as np
from tools import *
assert my_helper() == 42                                  # the student's own function
X, y = gen_simple_circular_distribution(10)
assert (X[:5] == 0).all() and (X[5:] == 5).all()          # the student's own version, not the course's
Xgrid, x1line, x2line = gen_sample_grid(20, 10, 3)        # what their tools.py lacks, from the course's
assert Xgrid.shape == (200, 2) and x1line[0] == -3
import tools
assert tools.get_cov(2, 1, 90)[0, 0] < 1.0001
"""


def _grade(assignment, evaluator, tmp_path, files):
    folder = tmp_path / "subs" / "s"
    folder.mkdir(parents=True)
    for name, data in files.items():
        if name.endswith(".ipynb"):
            nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in data]),
                           folder / name)
        else:
            (folder / name).write_text(data)
    return grade_one(assignment, evaluator, tmp_path / "subs")


@needs_sandbox
def test_a_students_own_tools_runs_and_the_stand_in_fills_only_what_is_missing(assignment, evaluator, tmp_path):
    hand_set_1b = ("from keras.models import Sequential\nfrom keras.layers import Dense\nx = np.linspace(0, 1, 200)\n"
                   "model = Sequential()\nmodel.add(Dense(units=3, activation='relu', input_dim=1))\n"
                   "model.add(Dense(units=1, activation='linear'))\n"
                   "model.layers[0].set_weights([np.array([[0.5, 1.75, 1.25]]), np.array([-0.05, -1.05, -1.0])])\n"
                   "model.layers[1].set_weights([np.array([[1], [-1], [1]]), np.array([0])])\ny_pred = model.predict(x)")
    result = _grade(assignment, evaluator, tmp_path, {"tools.py": OWN_TOOLS, "work.ipynb": [USES_TOOLS, hand_set_1b]})
    ran = result.notebooks[0]
    assert ran["cells_failed"] == 0, ran["failures"]
    assert task_of(result, "1b").status == "passed"
    notes = " ".join(result.notes)
    assert "Your own tools.py was used; the grader added what it lacks from the course's tools.py:" in notes
    added = notes.split("what it lacks from the course's tools.py:")[1].split(".")[0]
    assert "gen_sample_grid" in added and "get_cov" in added and "gen_xor_distribution" in added
    assert "gen_simple_circular_distribution" not in added and "my_helper" not in added


@needs_sandbox
def test_a_students_tools_that_fails_to_import_gives_way_to_the_course_one(assignment, evaluator, tmp_path):
    result = _grade(assignment, evaluator, tmp_path, {
        "tools.py": "import numpy as np\nimport a_module_only_on_my_laptop\n",
        "work.ipynb": ["from tools import *\nX, y = gen_simple_circular_distribution(60)\nassert X.shape == (60, 2)\n"
                       "Xgrid, _, _ = gen_sample_grid()\nassert Xgrid.shape == (40000, 2)"]})
    assert result.notebooks[0]["cells_failed"] == 0, result.notebooks[0]["failures"]
    notes = " ".join(result.notes)
    assert "Your tools.py failed when it was imported (ModuleNotFoundError" in notes
    assert "the course's tools.py (the grader's copy) was used instead" in notes


def test_a_missing_generator_is_explained_without_saying_the_import_is_missing():
    from grader.execute import diagnose
    from grader.execute.runner import CellRun

    for name in ("gen_sample_grid", "gen_my_own_data"):
        cell = CellRun(0, f"from tools import *\nX = {name}()", "error", "NameError",
                       f"name '{name}' is not defined")
        text = diagnose.explain(cell)
        assert "were not found" not in text and "gen_sample_grid" in text and "get_cov" in text
        assert "from tools import *" in text and "defined in the notebook" in text
