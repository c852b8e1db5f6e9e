"""Every diagnosis rule names its cause (and only its cause); the JAX re-run happens only for JAX's own failures."""
import pytest

from grader.execute.diagnose import RULES, backend_explains, explain
from grader.execute.runner import CellRun

#: (a failure as a student's cell raises it, a phrase the explanation must contain)
CASES = [
    (("AttributeError", "'DistributedDatasetInterface' object has no attribute 'x'",
      "from tensorflow.python.keras.models import Sequential"), "tensorflow.python.keras"),
    (("TypeError", "Adam.__init__() got an unexpected keyword argument 'lr'", "Adam(lr=0.01)"), "learning_rate"),
    (("ModuleNotFoundError", "No module named 'keras.layers.core'", "from keras.layers.core import Dense"),
     "keras.layers.core was removed"),
    (("ImportError", "cannot import name 'np_utils' from 'keras.utils'", "from keras.utils import np_utils"),
     "np_utils was removed"),
    (("ModuleNotFoundError", "No module named 'tools'", "from tools import *"), "tools.py"),
    (("ValueError", "You must call `compile()` before using the model.", "model.fit(x, y)"),
     "trained before it is compiled"),
    (("ValueError", "Arguments `target` and `output` must have the same shape. Received: target.shape=(None, 1)",
      "model.fit(X, y)"), "does not match the network"),
    (("TracerArrayConversionError", "The numpy.ndarray conversion method __array__() was called on traced array",
      "np.asarray(t)"), "TensorFlow-only behaviour"),
    (("MemoryError", "Unable to allocate 80.0 GiB for an array", "np.zeros(10**10)"), "ran out of memory"),
    (("FileNotFoundError", "[Errno 2] No such file or directory: '/content/drive/MyDrive/tut6/data.csv'",
      "X = np.loadtxt('/content/drive/MyDrive/tut6/data.csv')"), "The grader has no Google Drive"),
    (("ModuleNotFoundError", "No module named 'seaborn'", "import seaborn"), "not available in the grading"),
]


def _cell(name, value, source, traceback=""):
    return CellRun(0, source, "error", name, value, traceback)


def test_every_rule_has_a_case():
    assert len(CASES) == len(RULES)


@pytest.mark.parametrize("failure,phrase", CASES, ids=[c[1] for c in CASES])
def test_each_rule_explains_its_own_failure(failure, phrase):
    assert phrase in explain(_cell(*failure), memory_mb=1024)


@pytest.mark.parametrize("failure,phrase", CASES, ids=[c[1] for c in CASES])
def test_no_rule_fires_on_an_unrelated_error(failure, phrase):
    unrelated = _cell("ZeroDivisionError", "division by zero", "print(1 / 0)")
    assert phrase not in explain(unrelated) and "ZeroDivisionError: division by zero" in explain(unrelated)


def test_timeouts_deaths_and_quotas_are_explained():
    assert "longer than the grader's limit of 30 s" in explain(CellRun(0, "", "timeout"), cell_limit=30)
    assert "kernel died" in explain(CellRun(0, "", "died"))
    assert "more than the grader's 2048 MB" in explain(CellRun(0, "", "died"), memory_mb=2048, memory_exhausted=True)
    assert "disk quota" in explain(CellRun(0, "", "quota", "DiskQuota", "the notebook's files grew past the "
                                                                          "grader's disk quota of 16 MB"))


JAX_TRACEBACK = ("File .../site-packages/jax/_src/api.py, line 1, in jit\n"
                 "File .../site-packages/keras/src/backend/jax/trainer.py, line 2, in train_step")


@pytest.mark.parametrize("name,value", [
    ("TracerArrayConversionError", "The numpy.ndarray conversion method __array__() was called on traced array"),
    ("ConcretizationTypeError", "Abstract tracer value encountered where concrete value is expected"),
    ("TracerBoolConversionError", "Attempted boolean conversion of traced array"),
    ("AttributeError", "'ArrayImpl' object has no attribute 'numpy'"),
    ("AttributeError", "'DynamicJaxprTracer' object has no attribute 'assign'"),
])
def test_jax_only_failures_ask_for_a_tensorflow_run(name, value):
    assert backend_explains([_cell(name, value, "", JAX_TRACEBACK)])


@pytest.mark.parametrize("name,value", [
    ("ValueError", "Arguments `target` and `output` must have the same shape"),
    ("TypeError", "Input 0 of layer dense is incompatible with the layer"),
    ("NameError", "name 'jax' is not defined"),
    ("ZeroDivisionError", "division by zero"),
])
def test_ordinary_errors_on_the_jax_backend_are_not_rerun(name, value):
    """The bare word 'jax' is in almost every Keras traceback on this backend: it must not trigger a re-run."""
    assert backend_explains([_cell(name, value, "", JAX_TRACEBACK)]) is None
