"""The assignment spec: loads, validates, and names the field of every mistake."""
import shutil

import pytest

from conftest import TUTORIAL6
from grader.errors import SpecError
from grader.spec import load_assignment


def _copy(tmp_path):
    dst = tmp_path / "a"
    shutil.copytree(TUTORIAL6, dst)
    return dst


def test_tutorial6_declares_every_task_of_the_sheet(assignment):
    assert [t.id for t in assignment.tasks] == ["1a", "1b", "1c", "1d", "1e", "1f", "2a", "2b", "2c", "3", "4"]
    assert assignment.max_score == 100
    assert assignment.task("4").optional
    for task in assignment.model_tasks():
        th = task.threshold(task.metric)
        assert th is not None and "calibration" in th.source
        assert task.reference_seed is not None


def test_1a_reference_thresholds_are_looser_than_1c(assignment):
    assert assignment.task("1a").threshold("mse").passing > 100 * assignment.task("1c").threshold("mse").passing


@pytest.mark.parametrize("old,new,field", [
    ('points = 10\ndataset = "curve"\nmetric = "mse"\narchitecture = { inputs = 1, hidden = [[150, "relu"]]',
     'points = "ten"\ndataset = "curve"\nmetric = "mse"\narchitecture = { inputs = 1, hidden = [[150, "relu"]]',
     "tasks[2].points"),
    ('metric = "max_error"', 'metric = "accuracy"', "tasks[1].metric"),
    ('memory_mb = 3072', 'memory_mb = 100', "evaluation.memory_mb"),
    ('heldout = { n = 3000 }', 'heldout = { n = 3000 }\ncolour = "red"', "datasets.xor.colour"),
    ('generator = "datasets:gen_xor_distribution"', 'generator = "nowhere:gen_xor_distribution"',
     "datasets.xor.generator"),
])
def test_a_wrong_field_is_named_with_its_file(tmp_path, old, new, field):
    root = _copy(tmp_path)
    spec = root / "assignment.toml"
    text = spec.read_text()
    assert old in text
    spec.write_text(text.replace(old, new, 1))
    with pytest.raises(SpecError) as err:
        load_assignment(root)
    assert err.value.field == field
    assert str(spec) in str(err.value)


def test_missing_thresholds_say_how_to_get_them(tmp_path):
    root = _copy(tmp_path)
    (root / "calibration.toml").unlink()
    with pytest.raises(SpecError, match="grader calibrate"):
        load_assignment(root)
    assert load_assignment(root, require_thresholds=False).task("1c").thresholds == {}


def test_hand_set_thresholds_override_calibration(tmp_path):
    root = _copy(tmp_path)
    spec = root / "assignment.toml"
    spec.write_text(spec.read_text().replace(
        'reference = "solution:task_1c"', 'reference = "solution:task_1c"\nthresholds.mse = { pass = 1e-3, partial = 1e-2 }'))
    th = load_assignment(root).task("1c").threshold("mse")
    assert (th.passing, th.partial) == (1e-3, 1e-2) and "by hand" in th.source


def test_invalid_toml_is_a_spec_error(tmp_path):
    root = _copy(tmp_path)
    (root / "assignment.toml").write_text("[assignment\nid=")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_assignment(root)
