"""Plain-words explanations of why a cell failed.

Each rule looks at the error name, its message and the cell's source and
traceback; the first that fits explains the failure and says what to change.
Nothing here trusts the kernel: a forged traceback can only change the words
shown to the student who forged it.
"""
from __future__ import annotations

import re

from .limits import secs
from .runner import CellRun

#: (pattern searched in "ename: evalue\ntraceback\nsource", explanation).  Each gap within a pattern is bounded
#: (``[^\n]{0,300}``, never ``.*``): the source is the student's, and ``.*`` after each of a million ``Shapes`` on
#: one line scanned the rest of it from each (hours of the grader's own time, outside the student's limits)
RULES: list[tuple[str, str]] = [
    (r"DistributedDatasetInterface|tensorflow/python/keras/"
     r"|(?:No module named|cannot import name|has no attribute)[^\n]{0,300}tensorflow\.python\.keras",
     "This code uses the private tensorflow.python.keras package, which current TensorFlow no longer supports "
     "(it imports, then fails inside fit). Import from tensorflow.keras or keras instead: "
     "`from tensorflow.keras.models import Sequential`."),
    (r"unexpected keyword argument 'lr'|not recognized: \{'lr'|Argument\(s\) not recognized[^\n]{0,300}'lr'|"
     r"`lr` is deprecated",
     "Keras 3 renamed the optimizer argument `lr` to `learning_rate`: write Adam(learning_rate=0.01)."),
    (r"No module named 'keras\.layers\.core'|(?:cannot import name|has no attribute)[^\n]{0,300}keras\.layers\.core",
     "keras.layers.core was removed in Keras 3: import layers from keras.layers "
     "(`from keras.layers import Dense`)."),
    (r"(?:No module named|cannot import name|has no attribute)[^\n]{0,300}np_utils",
     "keras.utils.np_utils was removed in Keras 3: use `from keras.utils import to_categorical`."),
    (r"No module named 'tools'|name '(?:gen_\w+|get_cov)' is not defined",
     "A data generator is not defined where this cell uses it. The course's tools.py (gen_simple_circular_"
     "distribution, gen_xor_distribution, gen_circular_distribution, gen_sample_grid, get_cov) is always there, "
     "and completes a tools.py of your own: run `from tools import *` in a cell above this one. Any other "
     "function must be defined in the notebook (or your tools.py) before it is used."),
    (r"must call `?compile\(\)?`? before|You must compile your model before|compile\(\) before",
     "The model is trained before it is compiled: call model.compile(loss=..., optimizer=...) before model.fit."),
    (r"expected axis -1 of input shape to have value|incompatible with the layer|"
     r"expected shape=\(None, \d+\), found shape|Input 0 of layer [^\n]{0,300} is incompatible"
     r"|Arguments `target` and `output` must have the same shape|Shapes [^\n]{0,300} are incompatible",
     "The data's shape does not match the network: check input_dim (or the Input shape) against the number of "
     "columns of X, and that the targets match the output layer (two softmax outputs need to_categorical(y))."),
    (r"TracerArrayConversionError|object has no attribute 'numpy'|ConcretizationTypeError",
     "This code relies on TensorFlow-only behaviour (such as .numpy() or tf.* calls inside a model or loss) "
     "that the grader's fast JAX backend does not support."),
    (r"MemoryError|ResourceExhausted|Unable to allocate|OOM when allocating|std::bad_alloc",
     "The cell ran out of memory (the grader's limit is {memory_mb} MB): use smaller arrays or fewer units."),
    (r"(?:FileNotFoundError|OSError|IOError|No such file)[^\n]{0,300}(?:/content/drive|drive/My ?Drive)",
     "This cell reads a file from your Google Drive (/content/drive/...). The grader has no Google Drive: there "
     "/content/drive/MyDrive is an empty folder of the run (what the notebook saves there is kept). Hand in the "
     "files your notebook reads beside it and open them by name, e.g. np.loadtxt('data.csv')."),
    (r"ModuleNotFoundError|ImportError",
     "A module this cell imports is not available in the grading environment (only the course's packages are "
     "installed, and there is no network to install more)."),
]

TIMEOUT_TEXT = ("The cell ran longer than the grader's limit of {limit:.0f} s and was stopped; the cells after it "
                "ran in a fresh kernel. Check for an endless loop, or train for the number of epochs the sheet asks.")
DIED_TEXT = ("The Python kernel died while running this cell (for example os._exit, a crash, or running out of "
             "memory); the cells after it ran in a fresh kernel, without the variables made before.")


def timeout_text(cell: CellRun, limits) -> str:
    """Why a cell that timed out was stopped, from the limits it ran under (``limits.TimeLimits``): how long it
    ran, the limit it ran into and where that limit comes from."""
    ran = secs(cell.stopped_s or cell.seconds)
    if cell.limited_by == "notebook":
        return (f"Stopped after {ran} s: the notebook reached its time limit of {secs(limits.notebook.seconds)} s "
                f"({limits.notebook.why}), so this cell and the ones after it could not finish.")
    return (f"Stopped after {ran} s: the grader's limit for a cell is {secs(limits.cell.seconds)} s "
            f"({limits.cell.why}). The cells after it ran in a fresh kernel. Check for an endless loop, or "
            "train for the number of epochs the sheet asks.")


def explain(cell: CellRun, *, memory_mb: int = 4096, cell_limit: float = 600.0,
            memory_exhausted: bool = False, limits=None) -> str:
    """``limits``: the ``limits.TimeLimits`` the cell ran under (a timeout then says which and why);
    without them a timeout is told with ``cell_limit`` alone."""
    if cell.status == "timeout":
        return timeout_text(cell, limits) if limits is not None else TIMEOUT_TEXT.format(limit=cell_limit)
    if cell.status == "died":
        if memory_exhausted:
            return (f"The kernel was stopped for using more than the grader's {memory_mb} MB of memory; "
                    "the cells after it ran in a fresh kernel.")
        return DIED_TEXT
    if cell.status == "quota":
        return (f"Stopped: {cell.error_value}. The cells after it were not run. A notebook for this course "
                "writes a few small files at most: check for a loop that writes files or very large arrays.")
    if cell.status == "skipped":
        return f"Not run: {cell.error_value}."
    text = f"{cell.error_name}: {cell.error_value}\n{cell.traceback}\n{cell.source}"
    for pattern, explanation in RULES:
        if re.search(pattern, text):
            return explanation.format(memory_mb=memory_mb)
    return f"The cell raised {cell.error_name}: {cell.error_value[:200]}"


#: failures only the JAX backend has (so a TensorFlow re-run may succeed): JAX's own error types, and code
#: that treats a JAX array or tracer as a TensorFlow tensor.  Never the bare word "jax", which is in the
#: traceback of almost every Keras error on this backend.  ``_error_repr`` is JAX's tracer error failing on a
#: TensorFlow op: a layer's ``activation=tf.nn.relu`` (TensorFlow's own tutorials' spelling) ends a fit on JAX
#: in "Unable to automatically build the model ... 'str' object has no attribute '_error_repr'", the cause
#: (a TracerArrayConversionError) cut from the message by Keras.
JAX_ONLY = re.compile(
    r"\b(TracerArrayConversionError|ConcretizationTypeError|TracerBoolConversionError|TracerIntegerConversionError"
    r"|UnexpectedTracerError|NonConcreteBooleanIndexError)\b"
    r"|'(ArrayImpl|Array|[A-Za-z]*Tracer)' object has no attribute"
    r"|object has no attribute '(numpy|_error_repr)'")


def backend_explains(cells: list[CellRun]) -> str | None:
    """The first failure that the JAX backend explains (so a TensorFlow re-run may succeed), or None."""
    for cell in cells:
        if cell.status == "error":
            text = f"{cell.error_name}: {cell.error_value}\n{cell.traceback}"
            if JAX_ONLY.search(text):
                return f"{cell.error_name}: {cell.error_value[:160]}"
    return None
