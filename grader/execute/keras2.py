"""The Keras 2 path: code written for Keras 2 runs on Keras 2 (tf_keras), not on a guess.

``scan`` reads a notebook's code before it runs and finds what only Keras 2 runs (``tensorflow.python.keras``,
``keras.utils.np_utils``, ``Adam(lr=...)``, ``predict_classes``, ``model.save('name')``, ...), each with the
student's line and that line for current Keras; ``explains`` finds the same in a Keras 3 run's failures (the
re-run, like the JAX backend's TensorFlow re-run).  Such a notebook runs on TensorFlow with
``TF_USE_LEGACY_KERAS=1`` and ``keras2_kernel`` in its kernel; its models are captured as ``.h5`` and graded
exactly like a Keras 3 run's.  ``note`` is the report's paragraph: which Keras ran, that no points were taken
for it, and the one-line change for current Keras.  Nothing here runs student code: the scan reads text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

KERAS2 = "keras2"  # the name ``execute`` runs this path by (the TensorFlow backend, with tf_keras)

#: Keras 2's optimizer classes, and its lower-case aliases only as ``optimizers.adam(`` (a student's own
#: ``def sgd(w, g, lr=0.1)`` is no sign of Keras 2)
_OPTIMIZER = r"(?:\b(?:SGD|Adam|RMSprop|Adagrad|Adadelta|Adamax|Nadam|Ftrl|AdamW)|\boptimizers\.(?:sgd|adam|rmsprop))\s*\("
_SAVE_NO_EXT = re.compile(r"\b(?!np\b|numpy\b|pickle\b|joblib\b|torch\b)\w+\.save\(\s*(['\"])([^'\"./\\]+)\1\s*[,)]")
#: ``save_model(model, 'name')`` without an extension (``tf.keras.models.save_model``: Keras 2's SavedModel folder)
_SAVE_MODEL_NO_EXT = re.compile(r"\bsave_model\(\s*[\w.]+\s*,\s*(['\"])([^'\"./\\]+)\1\s*[,)]")
#: the longest line the scan reads (a Keras line is far shorter; a longer one is read up to here)
MAX_LINE = 2000


class _After:
    """``search(line)``: ``then`` found after the first ``first`` (what ``first.*then`` finds, in linear time:
    the scan reads the student's text, which may hold a line of many ``first``)."""

    def __init__(self, first: str, then: str):
        self.first, self.then = re.compile(first), re.compile(then)

    def search(self, line: str):
        m = self.first.search(line)
        return m and self.then.search(line, m.end())


#: ``save(..., save_format='tf')``: a TensorFlow SavedModel, asked for by name (Keras 3 has no ``save_format``)
_SAVE_FORMAT_TF = _After(r"\bsave(?:_model)?\(", r"\bsave_format\s*=\s*(['\"])(?:tf|tensorflow)\1")
#: Keras 2.2's lower-case optimizer aliases (``from keras.optimizers import adam``), and the classes they named
LOWER_OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop", "adagrad": "Adagrad",
                    "adadelta": "Adadelta", "adamax": "Adamax", "nadam": "Nadam"}
_LOWER_IMPORT = re.compile(r"\bfrom\s+(?:tensorflow\.)?keras\.optimizers\s+import\s+(.*)")
_LOWER = r"\b(" + "|".join(LOWER_OPTIMIZERS) + r")\b"


def _lower_imported(line: str) -> list[str]:
    """The lower-case optimizer aliases a ``from keras.optimizers import ...`` line imports."""
    m = _LOWER_IMPORT.search(line)
    return re.findall(_LOWER, m.group(1)) if m else []


def _lower_fix(line: str) -> str:
    m = _LOWER_IMPORT.search(line)
    return line[:m.start(1)] + re.sub(_LOWER, lambda n: LOWER_OPTIMIZERS[n.group(1)], m.group(1)) if m else line


def _keras1_fix(line: str) -> str:
    """Keras 1's names, which Keras 2 still took: ``output_dim=`` is ``units=``, ``init=`` ``kernel_initializer=``,
    ``nb_epoch=`` ``epochs=``."""
    line = re.sub(r"\boutput_dim\s*=", "units=", line)
    line = re.sub(r"\binit\s*=", "kernel_initializer=", line)
    return re.sub(r"\bnb_epoch\s*=", "epochs=", line)


def _save_format_fix(line: str) -> str:
    line = re.sub(r",\s*save_format\s*=\s*(['\"])(?:tf|tensorflow)\1", "", line)
    return _save_model_fix(_save_fix(line))


def _save_model_fix(line: str) -> str:
    return _SAVE_MODEL_NO_EXT.sub(lambda m: m.group(0).replace(m.group(1) + m.group(2) + m.group(1),
                                                               m.group(1) + m.group(2) + ".keras" + m.group(1)), line)


def _save_fix(line: str) -> str:
    return _SAVE_NO_EXT.sub(lambda m: m.group(0).replace(m.group(1) + m.group(2) + m.group(1),
                                                         m.group(1) + m.group(2) + ".keras" + m.group(1)), line)


def _decay_fix(line: str) -> str:
    """``Adam(lr=0.01, decay=1e-6)`` -> ``Adam(learning_rate=keras.optimizers.schedules.InverseTimeDecay(0.01, 1,
    1e-6))``: Keras 2's decay is that schedule."""
    decay = re.search(r"\bdecay\s*=\s*([^,()]+)", line)
    rate = re.search(r"\b(?:lr|learning_rate)\s*=\s*([^,()]+)", line)
    if not decay:
        return line
    schedule = (f"learning_rate=keras.optimizers.schedules.InverseTimeDecay("
                f"{rate.group(1).strip() if rate else '0.001'}, 1, {decay.group(1).strip()})")
    line = re.sub(r",?\s*\bdecay\s*=\s*[^,()]+", "", line)
    if rate:
        return re.sub(r"\b(?:lr|learning_rate)\s*=\s*[^,()]+", schedule, line, count=1)
    return re.sub(_OPTIMIZER, lambda m: m.group(0) + schedule + ("" if line[m.end():].lstrip().startswith(")")
                                                                 else ", "), line, count=1)


#: (what only Keras 2 runs, its name in the report, the line rewritten for current Keras)
SIGNS: list[tuple[re.Pattern | _After, str, object]] = [
    (_After(r"\bfrom\s+(?:tensorflow\.)?keras\.optimizers\s+import\s", _LOWER), "optimizers.adam", _lower_fix),
    (_After(r"\bDense\s*\(", r"\boutput_dim\s*="), "output_dim=", _keras1_fix),
    (_After(r"\bDense\s*\(", r"\binit\s*="), "init=", _keras1_fix),
    (re.compile(r"[(,]\s*nb_epoch\s*=(?!=)|^\s*nb_epoch\s*=[^=,()]*[,)]\s*$"), "nb_epoch=", _keras1_fix),
    (re.compile(r"tensorflow\.python\.keras\.utils\.np_utils\s+import"), "tensorflow.python.keras",
     lambda line: re.sub(r"tensorflow\.python\.keras\.utils\.np_utils", "tensorflow.keras.utils", line)),
    (re.compile(r"tensorflow\.python\.keras"), "tensorflow.python.keras",
     lambda line: line.replace("tensorflow.python.keras", "tensorflow.keras")),
    (re.compile(r"\bkeras\.utils\.np_utils\s+import"), "keras.utils.np_utils",
     lambda line: re.sub(r"keras\.utils\.np_utils", "keras.utils", line)),
    (re.compile(r"\bfrom\s+(?:tensorflow\.)?keras\.utils\s+import\s+np_utils\b"), "keras.utils.np_utils",
     lambda line: re.sub(r"\bnp_utils\b", "to_categorical", line)),
    (re.compile(r"\bnp_utils\.to_categorical\b"), "keras.utils.np_utils",
     lambda line: line.replace("np_utils.to_categorical", "to_categorical")),
    (re.compile(r"\bkeras\.backend\.tensorflow_backend\b"), "keras.backend.tensorflow_backend",
     lambda line: "(delete it: current Keras has no sessions, and TensorFlow 2 needs none)"),
    (re.compile(r"\bkeras\.layers\.core\b"), "keras.layers.core",
     lambda line: line.replace("keras.layers.core", "keras.layers")),
    (re.compile(_OPTIMIZER + r"[^()]*\bdecay\s*="), "decay=", _decay_fix),
    (re.compile(_OPTIMIZER + r"[^()]*\blr\s*="), "lr=",
     lambda line: re.sub(r"\blr\s*=", "learning_rate=", line)),
    (re.compile(r"\.optimizer\.lr\b"), "optimizer.lr",
     lambda line: re.sub(r"\.optimizer\.lr\b", ".optimizer.learning_rate", line)),
    (re.compile(r"\.predict_classes\s*\("), "predict_classes",
     # the whole dotted name (self.model.predict_classes), from its start only: linear on any line
     lambda line: re.sub(r"(?<![\w.])([A-Za-z_][\w.]*)\.predict_classes\s*\(([^()]*)\)",
                         r"np.argmax(\1.predict(\2), axis=-1)", line)),
    (re.compile(r"\.predict_proba\s*\("), "predict_proba",
     lambda line: re.sub(r"\.predict_proba\s*\(", ".predict(", line)),
    (re.compile(r"\.(fit|evaluate|predict)_generator\s*\("), "fit_generator",
     lambda line: re.sub(r"\.(fit|evaluate|predict)_generator\s*\(", r".\1(", line)),
    (_SAVE_FORMAT_TF, "save_format='tf'", _save_format_fix),
    (_SAVE_NO_EXT, "save('name')", _save_fix),
    (_SAVE_MODEL_NO_EXT, "save('name')", _save_model_fix),
    # Keras 2's save_weights('name.h5') (Keras 3 takes only 'name.weights.h5')
    (re.compile(r"\.save_weights\(\s*(['\"])[^'\"]*(?<!\.weights)\.h5\1"), "save_weights('name.h5')",
     lambda line: re.sub(r"(\.save_weights\(\s*(['\"])[^'\"]*?)\.h5\2", r"\1.weights.h5\2", line)),
    # TensorFlow 1 (up to 1.15, Colab's ``%tensorflow_version 1.x``) ran Keras 2; TensorFlow 2 moved these names
    (re.compile(r"\btf\.set_random_seed\s*\("), "tf.set_random_seed",
     lambda line: re.sub(r"\btf\.set_random_seed\s*\(", "tf.random.set_seed(", line)),
    (re.compile(r"\btf\.logging\."), "tf.logging",
     lambda line: re.sub(r"\btf\.logging\.", "tf.compat.v1.logging.", line)),
]

#: each sign's name in the report's words
SAID = {"tensorflow.python.keras": "the private tensorflow.python.keras", "lr=": "the optimizer argument lr=",
        "decay=": "the optimizer argument decay=", "optimizer.lr": "model.optimizer.lr",
        "save('name')": "model.save('name') without an extension",
        "optimizers.adam": "Keras 2's lower-case optimizer names (from keras.optimizers import adam)",
        "output_dim=": "Keras 1's Dense(output_dim=...)", "init=": "Keras 1's init=",
        "nb_epoch=": "Keras 1's fit(nb_epoch=...)", "save_format='tf'": "save_format='tf'",
        "tf.set_random_seed": "TensorFlow 1's tf.set_random_seed", "tf.logging": "TensorFlow 1's tf.logging",
        "save_weights('name.h5')": "save_weights('name.h5')"}

#: the APIs even Keras 2 had removed or deprecated, and what each ran as on the Keras 2 path
AS_MEANT = {
    "predict_classes": "model.predict_classes(x) ran as Keras 2 before 2.6 ran it, the argmax of model.predict(x) "
                       "(for one sigmoid output, predict(x) > 0.5)",
    "predict_proba": "model.predict_proba(x) ran as model.predict(x)",
    "fit_generator": "fit_generator (and evaluate_/predict_generator) ran as fit (evaluate, predict)",
    "save('name')": "model.save('name') (and save_model(model, 'name')) without an extension saved name.h5 (Keras 2 "
                    "wrote a TensorFlow SavedModel folder there, which the grader cannot grade; load_model('name') "
                    "finds name.h5)",
    "save_format='tf'": "save(..., save_format='tf') wrote the TensorFlow SavedModel folder it asked for, which the "
                        "grader cannot grade: its model is graded from the fit that trained it, and a file for a task "
                        "(model.h5) must be saved as one file",
    "output_dim=": "Keras 1's output_dim= and init= ran as Keras 2 ran them, as units= and kernel_initializer=",
    "init=": "Keras 1's init= ran as Keras 2 ran it, as kernel_initializer=",
    "nb_epoch=": "Keras 1's nb_epoch= ran as Keras 2 ran it, as epochs=",
    "tf.set_random_seed": "TensorFlow 1's tf.set_random_seed(n) ran as tf.compat.v1.set_random_seed(n)",
    "tf.logging": "TensorFlow 1's tf.logging ran as tf.compat.v1.logging",
}

#: a Keras 3 run's failures that only Keras 2 code has (the re-run on Keras 2, like the JAX backend's on TensorFlow)
KERAS2_ONLY = re.compile(
    r"DistributedDatasetInterface|tensorflow\.python\.keras"
    r"|unexpected keyword argument 'lr'|Argument\(s\) not recognized: \{'(lr|decay)'|`lr` is deprecated"
    r"|No module named 'keras\.(layers\.core|utils\.np_utils|engine|wrappers)'|cannot import name 'np_utils'"
    r"|has no attribute '(predict_classes|predict_proba|fit_generator|evaluate_generator|predict_generator)'"
    r"|Invalid filepath extension for saving"
    r"|cannot import name '(sgd|adam|rmsprop|adagrad|adadelta|adamax|nadam)' from '(tensorflow\.)?keras\.optimizers"
    r"|unexpected keyword argument '(nb_epoch|output_dim|init)'"
    r"|Unrecognized keyword arguments[^\n]{0,300}'(output_dim|init)'"  # a bounded gap: searched in student text
    r"|The `save_format` argument is deprecated|No module named 'keras\.backend\.tensorflow_backend'"
    r"|keras\.backend' has no attribute '(set_session|get_session)'"
    r"|module 'tensorflow' has no attribute '(set_random_seed|logging)'"
    r"|The filename must end in `\.weights\.h5`")


@dataclass
class Sign:
    cell: int  # 1-based position in the notebook, as failures count cells
    line: int  # 1-based line in the cell
    what: str  # the sign's name (``SIGNS``)
    source: str  # the student's line
    current: str  # that line for current Keras


@dataclass
class Keras2Code:
    signs: list[Sign] = field(default_factory=list)
    reason: str | None = None  # a Keras 3 run's failure that sent the code here (when the scan found nothing)

    def __bool__(self):
        return bool(self.signs) or self.reason is not None

    def names(self) -> list[str]:
        return list(dict.fromkeys(s.what for s in self.signs))


def _code_lines(source: str):
    """(1-based line number, the line without its comment) of a cell's Python lines."""
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "!", "%")):
            continue
        yield number, _without_comment(line)


def _without_comment(line: str) -> str:
    """``line`` without its trailing comment: what ``re.sub(r"\\s+#[^'\\"]*$", "", line)`` gives, in linear time
    (that pattern backtracks over the rest of the line from every whitespace: a 2 MB line of ``' #'`` ending in a
    quote took the grader hours, outside any time limit of the student's)."""
    quote = max(line.rfind("'"), line.rfind('"'))
    hash_ = line.find("#", quote + 1)
    while hash_ != -1 and (hash_ == 0 or not line[hash_ - 1].isspace()):
        hash_ = line.find("#", hash_ + 1)
    if hash_ == -1:
        return line
    start = hash_
    while start > 0 and line[start - 1].isspace():
        start -= 1
    return line[:start]


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether tf_keras is installed here (a dependency: without it, no code takes this path)."""
    from importlib.util import find_spec

    return find_spec("tf_keras") is not None


#: a name bound to a Keras model: assigned one (``Sequential(``, ``Model(``, ``load_model(``, ...) or compiled
_MODEL_MADE = re.compile(r"\b(\w+)\s*=\s*(?:[\w.]+\.)?(?:Sequential|Model|load_model|clone_model)\s*\(")
_MODEL_USED = re.compile(r"\b(\w+)\.(?:compile|fit|add|summary|fit_generator)\s*\(")


def keras_models(sources: list[str]) -> set[str]:
    """The names the code binds Keras models to: assigned a model or compiled, fitted, added to, summarised."""
    names = set()
    for source in sources:
        names.update(_MODEL_MADE.findall(source))
        names.update(_MODEL_USED.findall(source))
    return names


def _a_model_save(line: str, models: set[str]) -> bool:
    """Whether the line's extension-less ``.save('name')`` is a Keras model's: its object is a name the code
    binds a model to, or is called a model (``model``, ``my_model2``); PIL's ``img.save('name')`` or a
    ``fig.save`` is not."""
    for m in re.finditer(r"\b(\w+)\.save\(\s*(['\"])([^'\"./\\]+)\2\s*[,)]", line):
        if m.group(1) in models or "model" in m.group(1).lower():
            return True
    for m in _SAVE_MODEL_NO_EXT.finditer(line):  # save_model(model, 'name'): its model is its first argument
        first = re.match(r"save_model\(\s*([\w.]+)", m.group(0)).group(1).rsplit(".", 1)[-1]
        if first in models or "model" in first.lower():
            return True
    return False


def scan(nb) -> Keras2Code:
    """What in the notebook's code only Keras 2 runs (nothing found, or no tf_keras: an empty, false
    ``Keras2Code``)."""
    found = Keras2Code()
    if not available():
        return found
    code = [cell for cell in nb.cells if cell.get("cell_type") == "code"]
    # scikit-learn's classifiers have predict_proba too: no sign of Keras 2 in code that uses them
    sklearn = any(re.search(r"\bsklearn\b", str(cell.get("source", ""))) for cell in code)
    models = keras_models([str(cell.get("source", "")) for cell in code])
    # Keras 2.2's ``from keras.optimizers import adam``: ``adam(lr=0.01)`` is read as ``Adam(lr=0.01)``
    lower = {n for cell in code for _, line in _code_lines(str(cell.get("source", "")))
             for n in _lower_imported(line[:MAX_LINE])}
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        for number, line in _code_lines(str(cell.get("source", ""))):
            line = line[:MAX_LINE]
            source = line.strip()  # the student's own line, as the report quotes it
            if lower and not _LOWER_IMPORT.search(line):
                line = re.sub(r"\b(" + "|".join(sorted(lower)) + r")\s*\(",
                              lambda m: LOWER_OPTIMIZERS[m.group(1)] + "(", line)
            for pattern, what, fix in SIGNS:
                if sklearn and what == "predict_proba":
                    continue
                if what == "save('name')" and not _a_model_save(line, models):
                    continue
                if pattern.search(line):
                    found.signs.append(Sign(index + 1, number, what, source, fix(line).strip()))
                    break
    return found


def explains(cells) -> str | None:
    """The first failure of a Keras 3 run that only Keras 2 code has, or None (always, without tf_keras)."""
    for cell in cells if available() else ():
        if cell.status == "error":
            text = f"{cell.error_name}: {cell.error_value}\n{cell.traceback}"
            if KERAS2_ONLY.search(text):
                return f"{cell.error_name}: {cell.error_value[:160]}"
    return None


def scanned(files, read) -> tuple[list[str], list[str]]:
    """The names of the notebooks and scripts among ``files`` (``intake.SubmittedFile``s) that will run on Keras 2
    (the scan sends them there) and of the others; ``read`` reads one (``execute.read_notebook``); one that
    cannot be read is left to its run (among the others)."""
    keras2, others = [], []
    for f in files:
        if f.format not in ("notebook", "script"):
            continue
        try:
            chosen = bool(scan(read(f)))
        except Exception:
            chosen = False
        (keras2 if chosen else others).append(f.relative)
    return keras2, others


def limit_lines(limits, backend: str, files, read) -> list[str]:
    """What ``grader check`` says of the time limits before the submission's code runs (``limits``: the batch's
    ``BatchLimits``): those of ``backend``, and for the notebooks and scripts the scan sends to Keras 2
    (``scanned``) those of their run on TensorFlow, named as theirs."""
    from .limits import secs

    on_keras2, others = scanned(files, read)
    lines = []
    for names, used, where in ((others, limits.for_backend(backend), ""),
                               (on_keras2, limits.for_keras2(backend),
                                f" for Keras 2 code ({', '.join(on_keras2)}, run on tf_keras)")):
        if names or (not where and not on_keras2):
            lines.append(f"Time limits on this machine{where}: {secs(used.cell.seconds)} s per cell "
                         f"({used.cell.why}), {secs(used.notebook.seconds)} s for the notebook.")
    return lines


#: TensorFlow 1's graph API: a network trained without Keras, which the grader cannot take as a model
_GRAPH_MODE = re.compile(r"\btf\.(?:compat\.v1\.)?(?:Session|InteractiveSession|placeholder)\s*\("
                         r"|\btf\.(?:compat\.v1\.)?train\.\w+Optimizer\s*\(|\bimport\s+tensorflow\.compat\.v1\b")


def graph_mode_note(nb, name: str) -> str | None:
    """The report's words on a notebook that trains with TensorFlow 1's graph API (sessions, placeholders) and
    gave no Keras model: what to change, so that its tasks are not silently missing (None for any other)."""
    lines = [line for cell in nb.cells if cell.get("cell_type") == "code"
             for _, line in _code_lines(str(cell.get("source", "")))]
    if not any(_GRAPH_MODE.search(line) for line in lines):
        return None
    return (f"{name} trains its network with TensorFlow 1's graph API (tf.compat.v1 sessions and placeholders), "
            "not with Keras, so the grader found no Keras model to grade in it (the grader grades the Keras models a "
            "notebook trains). Build the network with Keras: model = keras.Sequential([...]), then "
            "model.compile(loss=..., optimizer=...) and model.fit(X, y, epochs=...), and save it with "
            "model.save('model.h5').")


def failed(cells) -> list:
    """The cells of a run that did not run to the end (an error, a timeout, a dead kernel), or not at all (skipped
    once the notebook's limit or the disk quota was reached: a re-run that the student's time budget left no time
    must not count as one where none failed)."""
    return [c for c in cells if c.status != "ok"]


def keras3_did_better(keras2_cells, keras2_models: int, keras3_cells, keras3_models: int) -> bool:
    """Whether a notebook's run on current Keras (Keras 3) did better than its run on Keras 2: fewer cells
    failed, or as few and more models made (a tie keeps the scan's Keras 2)."""
    return (len(failed(keras3_cells)), -keras3_models) < (len(failed(keras2_cells)), -keras2_models)


def _first_failure(cells) -> str:
    cell = failed(cells)[0]
    return f"cell {cell.index + 1}: {cell.error_name or cell.status}"


def second_run_note(code: Keras2Code, name: str, keras2_cells, keras3_cells, kept_keras3: bool) -> str:
    """The report's words on a notebook the scan sent to Keras 2 whose run failed cells, run again on current
    Keras: both runs' failures, and which run the results are from."""
    k2, k3 = len(failed(keras2_cells)), len(failed(keras3_cells))
    k3_said = f"{k3} failed ({_first_failure(keras3_cells)})" if k3 else "none failed"
    if kept_keras3:
        return (f"{name} looked like Keras 2 code (it uses {', '.join(SAID.get(n, n) for n in code.names())}), so "
                f"it ran on Keras 2 ({versions()}) first; there {k2} cell(s) failed ({_first_failure(keras2_cells)}), "
                f"so it was run again on current Keras (Keras 3), where {k3_said}: the results below are from "
                "the Keras 3 run.")
    return (f"Its Keras 2 run failed {k2} cell(s) ({_first_failure(keras2_cells)}), so it was also run on current "
            f"Keras (Keras 3), where {k3_said}; that did no better, so the results below are from the Keras 2 "
            "run.")


@lru_cache(maxsize=1)
def versions() -> str:
    """"tf_keras 2.21.0 on TensorFlow 2.21.0", from the installed distributions (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(*names):
        for name in names:
            try:
                return version(name)
            except PackageNotFoundError:
                continue
        return "?"

    return f"tf_keras {of('tf_keras', 'tf-keras')} on TensorFlow {of('tensorflow', 'tensorflow-cpu')}"


def note(code: Keras2Code, name: str, max_lines: int = 6) -> str:
    """The report's paragraph on notebook or script ``name``, which ran on Keras 2: which Keras, no points taken,
    and its lines for current Keras (each kind of change first, then the rest)."""
    why = (f"it uses {', '.join(SAID.get(n, n) for n in code.names())}" if code.signs else
           f"on current Keras (Keras 3) it failed with {code.reason}")
    text = (f"{name} is written for Keras 2 ({why}), so it ran on Keras 2 ({versions()}, "
            "TF_USE_LEGACY_KERAS=1), as it did where it was written; no points are taken for that.")
    firsts = list({s.what: s for s in reversed(code.signs)}.values())[::-1]  # each kind's first line
    changes = []
    for s in sorted(code.signs, key=lambda s: s not in firsts):
        change = f"cell {s.cell}, line {s.line}: `{s.source[:120]}` → `{s.current[:140]}`"
        if s.current != s.source and change not in changes:
            changes.append(change)
    if changes:
        shown = "; ".join(changes[:max_lines]) + (f" (and {len(changes) - max_lines} more)"
                                                  if len(changes) > max_lines else "")
        text += f" For current Keras (Keras 3), change {shown}."
    else:
        text += (" For current Keras (Keras 3), import from tensorflow.keras or keras and write "
                 "learning_rate= for lr=.")
    meant = [AS_MEANT[w] for w in code.names() if w in AS_MEANT]
    if meant:
        text += " APIs that even Keras 2 had removed ran as they meant: " + "; ".join(meant) + "."
    return text


#: ``python -c REFERENCE_RUNS <keras2_kernel.py> <assignment folder> <out> <json [[task, module, function, seed]]>``
REFERENCE_RUNS = """
import importlib, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("grader_keras2", sys.argv[1])
kernel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kernel)
kernel.install()
sys.path.insert(0, sys.argv[2])
import numpy as np
for task, module, function, seed in json.loads(sys.argv[4]):
    model, (x, y) = getattr(importlib.import_module(module), function)(seed)
    model.save(f"{sys.argv[3]}/{task}-{seed}.h5")
    np.savez(f"{sys.argv[3]}/{task}-{seed}.npz", x=np.asarray(x), y=np.asarray(y))
"""


def reference_runs(assignment, runs: list[tuple[str, int]], out) -> dict[tuple[str, int], object]:
    """Each ``(task id, seed)``: the task's reference trained on Keras 2 as a kernel on this path trains it
    (tf_keras with ``keras2_kernel``, in a process of its own), saved as ``out/<task>-<seed>.h5`` and its training
    data as ``out/<task>-<seed>.npz`` (``x``, ``y``): the runs that show whether the thresholds calibrated on
    Keras 3 hold on the Keras 2 path (``grader.calibrate_keras2``, ``tests/test_keras2.py``).  Returns
    ``{(task, seed): path of the .h5}``."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for tid, seed in runs:
        module, _, function = assignment.task(tid).reference.partition(":")
        items.append([tid, module, function, int(seed)])
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    # -P: the folder the TA runs from is not put on sys.path (a json.py or numpy.py there would run), as for the
    # speed probe
    kernel = str(Path(__file__).with_name("keras2_kernel.py"))
    proc = subprocess.run([sys.executable, "-P", "-c", REFERENCE_RUNS, kernel,
                           str(assignment.root), str(out), json.dumps(items)], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the Keras 2 reference runs failed:\n{proc.stderr[-3000:]}")
    return {(tid, seed): out / f"{tid}-{seed}.h5" for tid, seed in runs}
