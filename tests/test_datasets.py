"""The generators reproduce the course's distributions."""
import numpy as np

from grader.spec import import_reference


def gen(assignment, name):
    return import_reference(assignment, f"datasets:{name}")


def test_target_function_matches_the_sheet(assignment):
    f = gen(assignment, "target")
    x = np.array([0.0, 0.05, 0.1, 0.35, 0.6, 0.7, 0.8, 0.9, 1.0])
    np.testing.assert_allclose(f(x), [0, 0, 0, 0.125, 0.25, 0.125, 0, 0, 0], atol=1e-12)


def test_simple_circular_counts_order_and_radii(assignment):
    X, y = gen(assignment, "gen_simple_circular_distribution")(30000, scale=1, rng=np.random.default_rng(1))
    a = round(30000 / 3)
    assert X.shape == (30000, 2) and (y[:a] == 0).all() and (y[a:] == 1).all()
    r = np.hypot(X[:, 0], X[:, 1])
    # radius ~ Normal(0, 1) for class 0: |r| is half-normal with mean sqrt(2/pi)
    assert abs(r[:a].mean() - np.sqrt(2 / np.pi)) < 0.03
    assert abs(r[a:].mean() - 5) < 0.03 and abs(r[a:].std() - 1) < 0.03


def test_xor_clusters_and_rotations(assignment):
    X, y = gen(assignment, "gen_xor_distribution")(40000, rng=np.random.default_rng(2))
    a = 10000
    assert (y[:2 * a] == 0).all() and (y[2 * a:] == 1).all()
    np.testing.assert_allclose(X[:a].mean(0), [-2.3, -2.3], atol=0.02)
    np.testing.assert_allclose(X[3 * a:].mean(0), [2.3, -2.3], atol=0.02)
    c0, c1 = np.cov(X[:a].T), np.cov(X[2 * a:3 * a].T)
    # diag(0.4, 0.1) rotated by -45 / +45 degrees: off-diagonal -0.15 / +0.15, diagonal 0.25
    np.testing.assert_allclose(c0, [[0.25, -0.15], [-0.15, 0.25]], atol=0.02)
    np.testing.assert_allclose(c1, [[0.25, 0.15], [0.15, 0.25]], atol=0.02)


def test_ring_counts_and_radii(assignment):
    X, y = gen(assignment, "gen_circular_distribution")(7000, rng=np.random.default_rng(3))
    a, b = 1000, 2000
    r = np.hypot(X[:, 0], X[:, 1])
    assert (y == 0).sum() == 5000 and (y == 1).sum() == b
    assert abs(r[:a].mean() - 2) < 0.1
    assert abs(r[y == 1].mean() - 5) < 0.05
    assert abs(r[a:5000].mean() - 8) < 0.05


def test_heldout_grid_never_equals_training_points(assignment):
    from grader.evaluate.heldout import dataset_seeds, make_heldout

    ds = assignment.datasets["curve"]
    held = make_heldout(assignment, ds, dataset_seeds(assignment, "s1")["curve"])
    train = np.linspace(0, 1, 200)
    assert len(held["x"]) >= 1990 and not np.isin(held["x"], train).any()
    other = make_heldout(assignment, ds, dataset_seeds(assignment, "s2")["curve"])
    assert not np.array_equal(held["x"], other["x"])  # the secret moves the grid
    again = make_heldout(assignment, ds, dataset_seeds(assignment, "s1")["curve"])
    np.testing.assert_array_equal(held["x"], again["x"])


def test_training_data_name_the_datasets_they_may_come_from(assignment):
    from grader.harvest import identify_datasets

    def found(generator, seed, **kw):
        X, y = gen(assignment, generator)(rng=np.random.default_rng(seed), **kw)
        return identify_datasets(assignment, X, np.eye(2)[np.asarray(y, int)])

    # the sheet's draws of clearly different data name one dataset each: the architecture then picks among
    # that dataset's tasks only
    for seed in range(5):
        assert found("gen_simple_circular_distribution", seed, n=200) == ["circle"]
        assert found("gen_xor_distribution", seed, n=100) == ["xor"]
        assert found("gen_circular_distribution", seed, n=500) == ["ring"]
    # 30 points at scale 2 (task 2c): whichever dataset is likeliest, their own is always among those named,
    # and data of another shape never are
    draws = [found("gen_simple_circular_distribution", seed, n=30, scale=2) for seed in range(200)]
    assert all("circle_overlap" in d and "xor" not in d for d in draws)
    assert any(d[0] != "circle_overlap" for d in draws)  # the case this is for: a single guess would be wrong
    # a handful of points could come from anything: they name their likeliest dataset only
    assert all(len(found("gen_xor_distribution", seed, n=5)) == 1 for seed in range(20))
    # no data, or data of no dataset's shape, name none
    assert identify_datasets(assignment, None, None) == []
    assert identify_datasets(assignment, np.full((30, 2), np.nan), None) == []
    assert identify_datasets(assignment, np.zeros((30, 3)), None) == []
