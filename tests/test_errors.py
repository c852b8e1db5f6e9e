"""Errors cross process boundaries (evaluation worker, worker pools, Dask) as themselves."""
import inspect
import pickle

import pytest

from grader import errors


def _concrete():
    return [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.GraderError) and cls.__module__ == errors.__name__]


@pytest.mark.parametrize("cls", _concrete(), ids=lambda c: c.__name__)
def test_every_grader_error_pickles_with_its_class_message_and_hint(cls):
    error = cls.__new__(cls)
    errors.GraderError.__init__(error, "model.h5: the file ends early.", hint="Save it again.")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is cls and back.message == error.message and back.hint == "Save it again."
    assert back.explain() == "model.h5: the file ends early. Save it again."


def test_a_spec_error_keeps_where_it_happened():
    back = pickle.loads(pickle.dumps(errors.SpecError("a.toml", "tasks[0].points", "must be positive")))
    assert isinstance(back, errors.FatalError) and back.message == "a.toml: tasks[0].points: must be positive"
