"""Keras 2 in a student's kernel (the Keras 2 path, ``keras2``); runs there at start, imports nothing of the grader.

``install()`` imports TensorFlow with ``TF_USE_LEGACY_KERAS=1`` (so ``tensorflow.keras`` is tf_keras, Keras 2)
and makes the names Keras 2 code imports lead to tf_keras: ``keras`` and ``tensorflow.python.keras`` with their
submodules, the private ones Keras 2 still had (``keras.utils.np_utils``, ``keras.layers.core``).  Then it runs
as it meant what even tf_keras changed or dropped: ``Adam(lr=...)`` (tf_keras ignores ``lr``) and ``decay=``
(Keras 2's time-based decay), ``predict_classes``/``predict_proba``, and ``model.save('name')`` without an
extension (a SavedModel folder in Keras 2, which no grader loads: saved as ``name.h5``, and ``load_model('name')``
finds it).  A fit of array data without callbacks runs all its epochs in one TensorFlow call (``_fused_fit``:
tf_keras's own orders, batches and ``train_step``, the same weights bit for bit), and a predict of one array all
its batches (``_fused_predict``), on TensorFlow's single-threaded executor where the program allows it
(``_single_threaded``).  A ``py_function``'s Python runs the functions it calls eagerly (one inter-op thread would
hang it).  A failure leaves the kernel as TensorFlow makes it; the student's cells then say what failed.
"""
import contextlib
import functools
import importlib
import importlib.abc
import importlib.util
import os
import sys
import weakref

#: the names Keras 2 code imports Keras by, and what they lead to
ROOTS = ("tensorflow.python.keras", "keras")
#: what Keras 2 had public and tf_keras keeps in its private tree
PRIVATE = {"utils.np_utils": "src.utils.np_utils", "layers.core": "src.layers.core",
           "backend.tensorflow_backend": "src.backend"}  # multi-backend Keras 2's ``set_session``'s module
#: Keras 2.2's lower-case aliases of its optimizer classes (``keras.optimizers.adam``)
LOWER_OPTIMIZERS = ("adadelta", "adagrad", "adam", "adamax", "nadam", "rmsprop", "sgd")
#: optimizer classes whose ``lr=`` and ``decay=`` are Keras 2's
OPTIMIZERS = ("Adadelta", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "Ftrl", "Lion", "Nadam", "RMSprop",
              "SGD")
_real = {}  # TensorFlow's own leftover tensorflow.python.keras modules, kept alive (TensorFlow refers to them)
USED = set()  # which of the above the kernel's code used ("lr", "decay", "predict_classes", "save", ...)


def _target(fullname):
    """The tf_keras module ``fullname`` (an alias) stands for, or None."""
    for root in ROOTS:
        if fullname == root or fullname.startswith(root + "."):
            rest = fullname[len(root) + 1:]
            break
    else:
        return None
    if not rest:
        return "tf_keras"
    candidates = [f"tf_keras.{PRIVATE[rest]}"] if rest in PRIVATE else []
    candidates += [f"tf_keras.{rest}", f"tf_keras.src.{rest}"]
    for name in candidates:
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError, AttributeError):
            continue
    return None


class Aliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of ``keras...`` and ``tensorflow.python.keras...`` give the tf_keras module itself (one module
    object under both names, so its classes are tf_keras's)."""

    def find_spec(self, fullname, path=None, target=None):
        name = _target(fullname)
        if name is None:
            return None
        module = importlib.import_module(name)
        spec = importlib.util.spec_from_loader(fullname, self, is_package=hasattr(module, "__path__"))
        spec.grader_module = module
        return spec

    def create_module(self, spec):
        module = spec.grader_module
        spec.grader_own_spec = getattr(module, "__spec__", None)
        return module

    def exec_module(self, module):
        own = getattr(module.__spec__, "grader_own_spec", None)
        if own is not None:
            module.__spec__ = own  # the import system set the alias's spec on the real module


def _renamed(args, kwargs, old: str, new: str, used) -> None:
    """Keras 2's keyword ``old`` passed on as ``new`` (dropped when a value is also given positionally or as
    ``new``), and noted in ``used``."""
    if old in kwargs:
        value = kwargs.pop(old)
        if not args and new not in kwargs:
            kwargs[new] = value
        used.add(old)


def _keras2_optimizer(cls, used):
    """``cls.__init__`` taking Keras 2's ``lr`` (tf_keras warns and ignores it) and ``decay`` (tf_keras refuses
    it): ``lr`` is the learning rate, ``decay`` Keras 2's ``lr / (1 + decay * iterations)``."""
    import inspect

    original = cls.__init__
    try:
        default = inspect.signature(original).parameters["learning_rate"].default
    except (KeyError, TypeError, ValueError):
        default = 0.001

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        _renamed(args, kwargs, "lr", "learning_rate", used)
        decay = kwargs.pop("decay", None)
        if decay:
            import tf_keras

            base = args[0] if args else kwargs.get("learning_rate", default)
            schedule = tf_keras.optimizers.schedules.InverseTimeDecay(base, decay_steps=1, decay_rate=decay)
            if args:
                args = (schedule,) + tuple(args[1:])
            else:
                kwargs["learning_rate"] = schedule
            used.add("decay")
        _made[self] = (tuple(args), dict(kwargs))  # what it was made with: its legacy twin in graph mode
        original(self, *args, **kwargs)

    cls.__init__ = __init__


_made = weakref.WeakKeyDictionary()  # optimizer -> (args, kwargs) it was made with (``_graph_mode_optimizers``)


def _no_extension(path):
    return isinstance(path, (str, os.PathLike)) and not os.path.splitext(os.fspath(path).rstrip("/"))[1]


def _as_h5(filepath, args, kwargs, used):
    """Keras 2's ``save('name')`` without an extension or a format (a SavedModel folder) as ``name.h5``, the one
    file the grader takes; any other path as it is."""
    if not args and kwargs.get("save_format") is None and _no_extension(filepath):
        used.add("save")
        return os.fspath(filepath).rstrip("/") + ".h5"
    return filepath


def _patch_models(tf_keras, used):
    Model = tf_keras.Model

    def predict_classes(self, x, batch_size=32, verbose=0):
        """Keras 2's ``Sequential.predict_classes``: the class of each row (a single sigmoid: p > 0.5)."""
        import numpy as np

        used.add("predict_classes")
        proba = self.predict(x, batch_size=batch_size, verbose=verbose)
        if proba.shape[-1] > 1:
            return proba.argmax(axis=-1)
        return (proba > 0.5).astype("int32")

    def predict_proba(self, x, batch_size=32, verbose=0):
        """Keras 2's ``Sequential.predict_proba``: ``predict``."""
        used.add("predict_proba")
        return self.predict(x, batch_size=batch_size, verbose=verbose)

    for method in (predict_classes, predict_proba):
        if not hasattr(Model, method.__name__):
            setattr(Model, method.__name__, method)

    original_save = Model.save

    @functools.wraps(original_save)
    def save(self, filepath, *args, **kwargs):
        return original_save(self, _as_h5(filepath, args, kwargs, used), *args, **kwargs)

    Model.save = save

    from tf_keras.src.saving import saving_api

    original_load = saving_api.load_model

    @functools.wraps(original_load)
    def load_model(filepath, *args, **kwargs):
        if _no_extension(filepath) and not os.path.exists(filepath) and os.path.isfile(os.fspath(filepath) + ".h5"):
            filepath = os.fspath(filepath) + ".h5"  # what save('name') wrote above
        return original_load(filepath, *args, **kwargs)

    original_save_model = saving_api.save_model

    @functools.wraps(original_save_model)
    def save_model(model, filepath, *args, **kwargs):
        """``tf.keras.models.save_model(model, 'name')``, as ``model.save('name')`` above: ``name.h5``."""
        return original_save_model(model, _as_h5(filepath, args, kwargs, used), *args, **kwargs)

    saving_api.load_model, saving_api.save_model = load_model, save_model
    for name in ("tf_keras.models", "tf_keras.api._v2.keras.models", "tf_keras.api._v1.keras.models",
                 "tf_keras.src.models", "tf_keras.src.saving"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "load_model", None) is original_load:
            module.load_model = load_model
        if module is not None and getattr(module, "save_model", None) is original_save_model:
            module.save_model = save_model


def _keras1_dense(cls, used):
    """``Dense(output_dim=..., init=...)``: Keras 1's names, which Keras 2 still took (its legacy interface), as
    ``units`` and ``kernel_initializer``."""
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        _renamed(args, kwargs, "output_dim", "units", used)
        if "init" in kwargs:
            kwargs.setdefault("kernel_initializer", kwargs.pop("init"))
            used.add("init")
        original(self, *args, **kwargs)

    cls.__init__ = __init__


def _graph_mode_optimizers(tf_keras, used):
    """Without eager execution (``tf.compat.v1.disable_eager_execution()``), tf_keras's graph-mode ``compile``
    takes a legacy optimizer only; Keras 2 up to 2.10, where such code ran, had no other: a current one is
    compiled as its legacy twin (tf_keras's own ``convert_to_legacy_optimizer``)."""
    from tf_keras.src.engine import training_v1
    from tf_keras.src.optimizers import convert_to_legacy_optimizer
    from tf_keras.src.optimizers import optimizer as current

    original = training_v1.Model.compile

    @functools.wraps(original)
    def compile(self, optimizer="rmsprop", *args, **kwargs):
        if isinstance(optimizer, current.Optimizer):
            twin = getattr(tf_keras.optimizers.legacy, type(optimizer).__name__, None)
            try:
                if optimizer in _made and twin is not None:  # made again from its arguments: its config reads
                    made, settings = _made[optimizer]  # its variables, which graph mode cannot
                    optimizer = twin(*made, **{k: v for k, v in settings.items() if k not in _CURRENT_ONLY})
                else:
                    optimizer = convert_to_legacy_optimizer(optimizer)
                used.add("graph mode")
            except Exception:
                pass  # compiled as it is: tf_keras says why it cannot
        return original(self, optimizer, *args, **kwargs)

    training_v1.Model.compile = compile


#: settings of tf_keras's current optimizers that their legacy twins do not take
_CURRENT_ONLY = ("weight_decay", "use_ema", "ema_momentum", "ema_overwrite_frequency", "jit_compile", "mesh",
                 "is_legacy_optimizer")


#: batches a fit runs per call into TensorFlow where the fused fit does not apply (tf_keras's
#: ``steps_per_execution``: the same batches, updates and weights, bit for bit; only a callback's per-batch hooks
#: would see fewer calls, so a fit with a callback that has them keeps 1 (callbacks of epochs only, such as
#: ``EarlyStopping`` or a ``Callback`` with ``on_epoch_end``, do not: 2-3x faster), and so does one with validation
#: data, which it made slower)
STEPS_PER_EXECUTION = 64
#: what the last ``fit`` did, as the capture hook reads it (``fit.grader_report``): {"fused": bool,
#: "fused_fallback": why not, "fused_program": None}
last_report = {}
_FIT_ARGS = ("x", "y", "batch_size", "epochs", "verbose", "callbacks", "validation_split", "validation_data",
             "shuffle", "class_weight", "sample_weight", "initial_epoch", "steps_per_epoch", "validation_steps",
             "validation_batch_size", "validation_freq", "max_queue_size", "workers", "use_multiprocessing")


class _Fallback(Exception):
    """Outside the fused subset: tf_keras's own fit trains, for the reason given."""


def _in_trace(reason: str) -> "_Fallback":
    """A ``_Fallback`` raised while a program is traced, whose ``reason`` its report gives (``_traced``: TensorFlow's
    trace passes on an exception of its type, with its own message)."""
    _state["why"] = reason
    return _Fallback(reason)


def _traced(e: Exception) -> _Fallback:
    """What a failed trace of a fused program means: tf_keras's own fit or predict, for the reason given."""
    why = _state.pop("why", None)
    if isinstance(e, _Fallback) and why:
        return _Fallback(why)
    return _Fallback(f"could not be traced ({type(e).__name__}: {str(e)[:120]})")


def _plain_arrays(data):
    """Whether ``data`` is arrays (NumPy or TensorFlow tensors, or a list/tuple/dict of them): tf_keras's
    ``TensorLikeDataAdapter``, whose dataset the fused fit iterates as tf_keras does."""
    import numpy as np

    if isinstance(data, (list, tuple)):
        return bool(data) and all(_plain_arrays(d) for d in data)
    if isinstance(data, dict):
        return bool(data) and all(_plain_arrays(d) for d in data.values())
    if isinstance(data, np.ndarray):
        return data.dtype != object
    return type(data).__name__ in ("EagerTensor", "Tensor") and type(data).__module__.startswith("tensorflow")


def _refuse_unfusable(model, kw):
    """Raise ``_Fallback`` (naming why) for a fit the fused program does not run as tf_keras's fit would:
    callbacks, settings beyond epochs and batches, data other than arrays, the model's own training settings
    (its ``steps_per_execution``, ``run_eagerly``, ``jit_compile``: XLA's numbers are not the graph's)."""
    import tensorflow as tf

    epochs, validation_data = kw.get("epochs", 1), kw.get("validation_data")
    if kw.get("callbacks"):
        raise _Fallback("callbacks")
    if tf.inside_function():
        raise _Fallback("fit inside a tf.function")
    for name, default in (("initial_epoch", 0), ("steps_per_epoch", None), ("validation_steps", None),
                          ("validation_freq", 1)):
        if kw.get(name, default) != default:
            raise _Fallback(name)
    if not isinstance(epochs, int) or epochs < 1:
        raise _Fallback("epochs")
    if not _plain_arrays(kw.get("x")) or not (kw.get("y") is None or _plain_arrays(kw.get("y"))):
        raise _Fallback("data other than arrays")
    if validation_data is not None and not (isinstance(validation_data, (list, tuple))
                                            and all(v is None or _plain_arrays(v) for v in validation_data)):
        raise _Fallback("validation data other than arrays")
    spe = getattr(model, "_steps_per_execution", None)
    if (spe is None or int(spe.numpy()) != 1 or model.autotune_steps_per_execution or model.run_eagerly
            or model.distribute_strategy._should_use_with_coordinator or model._jit_compile
            or type(model).make_train_function is not _state["make_train_function"]):
        raise _Fallback("the model's own training settings")


def _replay_epochs(callbacks, train_logs, val_logs, names, epochs: int) -> dict:
    """Each epoch's results, as the fused program returned them, told to the fit's callbacks (its ``History``)
    as tf_keras's epoch loop tells them (a ``History`` alone is given them all at once, as it keeps them); the
    last epoch's logs."""
    import copy

    from tf_keras.src.callbacks import History

    history = getattr(callbacks, "_history", None)
    if type(history) is History and callbacks.callbacks == [history]:  # the fused fit's: its History only
        columns = {k: train_logs[:, i].tolist() for i, k in enumerate(names["train"])}
        if val_logs is not None:
            columns.update({"val_" + k: val_logs[:, i].tolist() for i, k in enumerate(names["val"])})
        history.epoch.extend(range(epochs))  # what its on_epoch_end does each epoch, all epochs at once
        for k, column in columns.items():
            history.history.setdefault(k, []).extend(column)
        history.model.history = history
        return {k: column[-1] for k, column in columns.items()}
    logs = {}
    for epoch in range(epochs):
        logs = {k: train_logs[epoch, i].item() for i, k in enumerate(names["train"])}
        if val_logs is not None:
            logs.update({"val_" + k: val_logs[epoch, i].item() for i, k in enumerate(names["val"])})
        callbacks.on_epoch_begin(epoch)
        callbacks.on_epoch_end(epoch, copy.copy(logs))
    return logs


def _data_handlers(model, kw, data, val, epochs):
    """tf_keras's data handlers of the training ``data`` (x, y, sample_weight) and of the validation data ``val``
    (None without), as its fit makes them; data of any kind but arrays is a ``_Fallback``."""
    from tf_keras.src.engine import data_adapter

    batch_size = kw.get("batch_size")
    handler = data_adapter.get_data_handler(
        x=data[0], y=data[1], sample_weight=data[2], batch_size=batch_size, epochs=epochs,
        shuffle=kw.get("shuffle", True), class_weight=kw.get("class_weight"), model=model,
        steps_per_execution=model._steps_per_execution)
    if type(handler._adapter).__name__ != "TensorLikeDataAdapter" or not handler.inferred_steps:
        raise _Fallback(f"data of adapter {type(handler._adapter).__name__}")
    if val is None:
        return handler, None
    val_handler = data_adapter.get_data_handler(
        x=val[0], y=val[1], sample_weight=val[2], batch_size=kw.get("validation_batch_size") or batch_size,
        epochs=1, model=model, steps_per_execution=model._steps_per_execution)
    if type(val_handler._adapter).__name__ != "TensorLikeDataAdapter" or not val_handler.inferred_steps:
        raise _Fallback("validation data of another kind")
    return handler, val_handler


def _trace_and_run(model, program, args):
    """The fused ``program`` traced (each step sharing one read of the optimizer's rate and count) and run: its
    training and validation logs, or None where the program traced for TensorFlow's single-threaded executor
    holds what that executor cannot run (``_single_threaded``; trace a program for the threaded one then).  A
    failure before any step is a ``_Fallback`` (tf_keras's fit: nothing was drawn yet); one while training is the
    fit's own."""
    single = program._grader_single
    try:
        model.reset_metrics()
        _state["share_reads"] = True
        try:
            with _executor(single):
                concrete = program.get_concrete_function(*_relaxed(args))
        finally:
            _state["share_reads"] = False
    except Exception as e:
        raise _traced(e) from None
    if single and not _single_threaded(concrete, program._grader_loops):
        return None
    # the fused fit runs: a failure from here on (a student's assertion) is the fit's own, and its report says so
    last_report.update(fused=True, fused_fallback=None, executor="single-threaded" if single else "threaded")
    with _executor(single):
        return concrete(*args)


#: TensorFlow's executor for a program of plain ops, each run in turn on the calling thread: a step of the
#: sheet's fits costs about two thirds of the threaded executor's, and a program starts in half the time
SINGLE_THREADED = "SINGLE_THREADED_EXECUTOR"
#: ops of a traced program that keep it off the single-threaded executor: a branch or a call of another function
#: waits there for a thread the executor holds (a ``tf.cond`` in the epochs' loop never finished), and an
#: iterator's or Python's ops are not plain ops; TensorFlow 1's control flow, a graph's partitions and the ops
#: that wait on a queue, a barrier or another device the executor refuses or could wait on for ever.  Any other op
#: that calls a function (an attribute naming one) but the program's own loops keeps it off as well
_NOT_SINGLE = {"If", "StatelessIf", "Case", "StatelessCase", "PartitionedCall", "StatefulPartitionedCall",
               "SymbolicGradient", "RemoteCall", "For", "PyFunc", "PyFuncStateless", "EagerPyFunc",
               "Switch", "RefSwitch", "Merge", "RefMerge", "Enter", "RefEnter", "Exit", "RefExit", "NextIteration",
               "RefNextIteration", "LoopCond", "ControlTrigger", "_Send", "_Recv", "_HostSend", "_HostRecv"}
#: parts of op names of the same kind (``QueueDequeueV2``, ``IteratorGetNext``, ``CollectiveReduceV2`` ...), and
#: of the sparse updates of an ``Embedding``'s (or any gather's) gradient (``Unique``, ``UnsortedSegmentSum``,
#: ``ResourceScatterAdd``), which the single-threaded executor's program computed in other last bits than tf_keras
#: (``tests/test_keras2_executor.py``)
_NOT_SINGLE_PARTS = ("Iterator", "Dataset", "Queue", "Barrier", "Collective", "Accumulator", "Stage", "Send",
                     "Recv", "Infeed", "Outfeed", "Xla", "Scatter", "Segment", "Unique")


def _calls_a_function(node) -> bool:
    """Whether a graph's ``node`` names a function to run (``If``'s branches, a call's ``f``, a loop's body)."""
    return any(a.WhichOneof("value") == "func" or (a.WhichOneof("value") == "list" and len(a.list.func))
               for a in node.attr.values())


def _single_threaded(concrete, loops: int) -> bool:
    """Whether the traced program runs on the single-threaded executor: the fused program's own loops
    (``loops``: epochs, steps, validation steps) and no other, no op of ``_NOT_SINGLE`` or ``_NOT_SINGLE_PARTS``,
    no other op that calls a function.  Read once a traced program (kept on it): reading its graph cost a third of
    a repeated predict of the sheet's 200 points."""
    known = getattr(concrete, "_grader_single_threaded", None)
    if known is not None:
        return known
    try:
        graph = concrete.graph.as_graph_def()
    except Exception:
        return False
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    whiles = sum(n.op in ("While", "StatelessWhile") for n in nodes)
    known = whiles == loops and not any(
        n.op in _NOT_SINGLE or any(part in n.op for part in _NOT_SINGLE_PARTS)
        or (_calls_a_function(n) and n.op not in ("While", "StatelessWhile")) for n in nodes)
    concrete._grader_single_threaded = known
    return known


def _fused_fit(model, kw):
    """tf_keras's ``fit`` of array data without callbacks, all its epochs in one ``tf.function`` call instead of a
    Python loop of calls: tf_keras's own data handler (its shuffling, ``class_weight``, casts), each step's batch
    cut in the program from every epoch's order drawn at once (``_batches``; where they cannot be, one iterator
    over tf_keras's dataset for every epoch, as its fit keeps one), tf_keras's own ``train_step`` (and
    ``test_step`` over the validation data, as ``evaluate`` runs it), the metrics reset between epochs as ``fit``
    resets them, each epoch's results into a real ``History``.  The same batches in the same order through the
    same steps: the same weights and history as tf_keras's fit, bit for bit (``tests/test_keras2.py``)."""
    import time

    import tensorflow as tf
    from tf_keras.src import callbacks as callbacks_module
    from tf_keras.src.engine import data_adapter, training_utils

    _refuse_unfusable(model, kw)
    x, y = kw.get("x"), kw.get("y")
    epochs, verbose = kw.get("epochs", 1), kw.get("verbose", "auto")
    validation_split, validation_data = kw.get("validation_split", 0.0), kw.get("validation_data")
    sample_weight = kw.get("sample_weight")
    model._assert_compile_was_called()
    model._check_call_args("fit")
    if validation_split and validation_data is None:
        (x, y, sample_weight), validation_data = data_adapter.train_validation_split(
            (x, y, sample_weight), validation_split=validation_split)
    val = None
    if validation_data:
        val = data_adapter.unpack_x_y_sample_weight(validation_data)
    with model.distribute_strategy.scope(), training_utils.RespectCompiledTrainableState(model), \
            _epochs_drawn_at_once(data_adapter, epochs, kw.get("shuffle", True)):
        handler, val_handler = _data_handlers(model, kw, (x, y, sample_weight), val, epochs)
        steps = int(handler.inferred_steps)
        val_steps = int(val_handler.inferred_steps) if val_handler else 0
        callbacks = callbacks_module.CallbackList(None, add_history=True, add_progbar=False, model=model,
                                                  verbose=0, epochs=epochs, steps=steps)
        model.stop_training = False
        model._train_counter.assign(0)
        started = time.perf_counter()
        callbacks.on_train_begin()
        # each step's batch cut in the program from the orders drawn at once, or else from tf_keras's dataset
        source = _in_graph(handler, epochs, kw.get("class_weight")) or iter(handler._dataset)
        # the validation batches, the same each epoch (unshuffled, whole): one pass an epoch of a repeated dataset
        val_source = None
        if val_handler is not None:
            val_source = _in_graph(val_handler, 1) or iter(val_handler._dataset.repeat())
        last_report["in_graph"] = isinstance(source, tuple) and (val_source is None or isinstance(val_source, tuple))
        program, names = _fused_program(model, val_handler is not None)
        _build_optimizer(model)
        args = (source, val_source, tf.constant(epochs, tf.int32), tf.constant(steps, tf.int32),
                tf.constant(val_steps, tf.int32))
        logs = _trace_and_run(model, program, args)
        if logs is None:  # the program for the threaded executor, kept for the model's next fits
            program, names = _fused_program(model, val_handler is not None, single=False)
            logs = _trace_and_run(model, program, args)
        train_logs, val_logs = logs
        logs = _replay_epochs(callbacks, train_logs.numpy(), val_logs.numpy() if val_handler is not None else None,
                              names, epochs)
        from tf_keras.src.optimizers import optimizer as optimizers

        if isinstance(model.optimizer, optimizers.Optimizer):  # as tf_keras's fit (legacy ones have none)
            model.optimizer.finalize_variable_values(model.trainable_variables)
        callbacks.on_train_end(logs=logs)
    seconds = time.perf_counter() - started
    last_report.update(fused=True, fused_fallback=None, fused_program=None)
    last_report.setdefault("orders_at_once", False)
    if verbose != 0:
        shown = " - ".join(f"{k}: {float(v):.4g}" for k, v in logs.items())
        print(f"Epoch {epochs}/{epochs} - {shown} (fused: {epochs} epochs in {seconds:.1f} s)", flush=True)
    return model.history


#: the most indices the epochs' orders may hold when drawn at once (``_epochs_drawn_at_once``; 32 MB)
MAX_ORDER_INDICES = 1 << 22


@contextlib.contextmanager
def _epochs_drawn_at_once(data_adapter, epochs: int, shuffle):
    """While tf_keras's array adapters are made: their dataset of each step's indices (one order per epoch, drawn
    by its own ``permutation`` dataset, then a dataset made per epoch that cuts the order into batches, which costs
    more than the step it feeds for the sheet's small fits) is replaced by the same indices cut from every epoch's
    order at once: the orders drawn from tf_keras's own dataset of them (the same seeds, so the same orders), cut
    as tf_keras cuts them (full batches, then the partial one).  The same batches in the same order, as a dataset
    of the same kind (``tests/test_keras2.py``); anything unexpected keeps tf_keras's own.  Each adapter keeps
    what it was cut from (``_grader_orders``: the orders, one row an epoch, and its inputs), from which the fused
    program cuts each step's batch itself (``_in_graph``)."""
    import tensorflow as tf

    cls = data_adapter.TensorLikeDataAdapter
    original = cls.slice_inputs

    def slice_inputs(self, indices_dataset, inputs):
        try:
            orders = indices_dataset._input_dataset  # the epochs' orders, before tf_keras cuts each into batches
            n, batch, count = int(orders.element_spec.shape[0]), int(self._batch_size), int(orders.cardinality())
            if shuffle == "batch" or not 1 <= count <= epochs or count * n > MAX_ORDER_INDICES or n < 1 or batch < 1:
                raise ValueError("not drawn at once")
            # every epoch's order: (count, n); a validation's: (1, n).  Drawn by tf_keras's map of them without the
            # prefetch after it (which hands each order across threads): the same function, so the same draws
            drawn_from = orders._input_dataset if type(orders).__name__ == "_PrefetchDataset" else orders
            options = tf.data.Options()
            options.experimental_optimization.apply_default_optimizations = False
            drawn = next(iter(drawn_from.batch(count).with_options(options)))
            if tuple(drawn.shape) != (count, n):
                raise ValueError("orders of another shape")
            cut = [batch] * (n // batch) + ([n % batch] if n % batch else [])
            lengths = tf.tile(tf.constant(cut, tf.int64), [count])
            indices_dataset = tf.data.Dataset.from_tensor_slices(
                tf.RaggedTensor.from_row_lengths(tf.reshape(drawn, [-1]), lengths))
            self._grader_orders = (drawn, inputs)
            last_report["orders_at_once"] = True
        except Exception:
            pass  # tf_keras's own indices
        return original(self, indices_dataset, inputs)

    cls.slice_inputs = slice_inputs
    try:
        yield
    finally:
        cls.slice_inputs = original


def _in_graph(handler, rows: int, class_weight=None):
    """The fused program's own source of a handler's batches (``_batches``), or None (tf_keras's dataset then):
    the adapter's orders (``rows`` of them: one an epoch, or one for every epoch of a validation) and inputs,
    its batch size, the batches' static size where tf_keras's dataset has one (no partial batch), and the class
    weights as sorted pairs.  Only for inputs that are dense tensors, as tf_keras's gather takes them."""
    import tensorflow as tf

    kept = getattr(handler._adapter, "_grader_orders", None)
    if kept is None or int(kept[0].shape[0]) != rows:
        return None
    orders, inputs = kept
    if not all(isinstance(t, tf.Tensor) for t in tf.nest.flatten(inputs) if t is not None):
        return None
    n, batch = int(orders.shape[1]), int(handler._adapter._batch_size)
    weights = tuple(sorted((int(k), float(v)) for k, v in class_weight.items())) if class_weight else None
    return orders, inputs, tf.constant(batch, tf.int32), (batch if n % batch == 0 else None), weights


def _build_optimizer(model):
    """Make a tf_keras optimizer's variables (its slots: Adam's ``m`` and ``v``) before the fused program is
    traced, as its first step would make them, with the same names, for the same variables in the same order
    (``train_step`` applies the gradients of ``model.trainable_variables``): a trace that makes variables is
    traced twice (TensorFlow's rule for a ``tf.function``), and the first trace of a model is most of its fit's
    cost after its steps.  Only tf_keras's own optimizers of the current kind (a legacy one, or one of the
    student's own classes, makes its variables in its first step)."""
    import tensorflow as tf

    optimizer = model.optimizer
    if (getattr(optimizer, "_built", False) or type(optimizer).__module__ not in _BUILT_HERE or not model.built
            or getattr(optimizer, "_mesh", None) or getattr(optimizer, "_run_with_dtensor", False)):
        return
    with tf.name_scope(optimizer.name or "optimizer"), tf.init_scope():  # as ``apply_gradients`` makes them
        optimizer.build(model.trainable_variables)


#: the modules of the optimizers ``_build_optimizer`` builds (tf_keras's own, of the current kind)
_BUILT_HERE = {f"tf_keras.src.optimizers.{name}" for name in (
    "adadelta", "adafactor", "adagrad", "adam", "adamax", "adamw", "ftrl", "lion", "nadam", "rmsprop", "sgd")}


def _share_reads(tf_keras):
    """While the fused program is traced, a tf_keras optimizer's variable updates of one step share one read of
    its ``iterations`` and ``learning_rate`` variables instead of each reading them (Adam computes its step
    count, powers and step size from them for every variable): the same values from the same ops, so TensorFlow
    computes them once a step where it computed them for each variable (a sixth of a step of the sheet's
    4-layer Adam fits).  Read before the first update of the step, as the first update read them."""
    from tf_keras.src.optimizers import optimizer as optimizers

    base = optimizers._BaseOptimizer
    iterations, learning_rate = base.iterations, base.learning_rate
    original_update, original_apply = base._update_step, optimizers.Optimizer._internal_apply_gradients

    def read(self, name, variable):
        shared = self.__dict__.get("_grader_sharing")
        if shared is None or not hasattr(variable, "value"):
            return variable
        if name not in shared:
            shared[name] = variable.value()
        return shared[name]

    def shared_iterations(self):
        return read(self, "iterations", iterations.fget(self))

    def shared_learning_rate(self):
        return read(self, "learning_rate", learning_rate.fget(self))

    def _update_step(self, gradient, variable):
        reads = self.__dict__.get("_grader_reads")
        if reads is None:
            return original_update(self, gradient, variable)
        self.__dict__["_grader_sharing"] = reads
        try:
            return original_update(self, gradient, variable)
        finally:
            self.__dict__["_grader_sharing"] = None

    def _internal_apply_gradients(self, grads_and_vars):
        if not _state.get("share_reads"):
            return original_apply(self, grads_and_vars)
        self.__dict__["_grader_reads"] = {}  # this step's reads
        try:
            return original_apply(self, grads_and_vars)
        finally:
            self.__dict__["_grader_reads"] = None

    base.iterations = property(shared_iterations, iterations.fset, iterations.fdel, iterations.__doc__)
    base.learning_rate = property(shared_learning_rate, learning_rate.fset, learning_rate.fdel,
                                  learning_rate.__doc__)
    base._update_step = _update_step
    optimizers.Optimizer._internal_apply_gradients = _internal_apply_gradients


def _relaxed(args):
    """The program's arguments as it is traced for them: a source's orders and inputs of any length (a fit of
    other epochs or samples whose batches have tf_keras's shapes runs the same program, as tf_keras's fit runs its
    one ``train_function`` for its dataset's batches)."""
    import tensorflow as tf

    def spec(t, leading):
        return tf.TensorSpec([None] * leading + t.shape[leading:].as_list(), t.dtype)

    def relaxed(source):
        if not isinstance(source, tuple):
            return source
        orders, inputs, size, static, weights = source
        return (spec(orders, 2), tf.nest.map_structure(lambda t: spec(t, 1) if t is not None else None, inputs),
                size, static, weights)

    return (relaxed(args[0]), relaxed(args[1])) + tuple(args[2:])


def _batches(source):
    """``batch(epoch, step)``: the step's batch, from tf_keras's dataset (``source`` its iterator) or cut in the
    program (``source`` from ``_in_graph``) as tf_keras's dataset cuts it: the epoch's order sliced at the step
    (the last batch the partial one), each input gathered by it (tf_keras's ``grab_batch``), the class weights
    made sample weights by tf_keras's own map; the batches' shape as in tf_keras's dataset, so the step traces
    as in tf_keras's fit."""
    import tensorflow as tf

    if not isinstance(source, tuple):
        return lambda epoch, step: next(source)
    orders, inputs, size, static, weights = source
    from tf_keras.src.engine import data_adapter

    to_weights = data_adapter._make_class_weight_map_fn(dict(weights)) if weights else None

    def batch(epoch, step):
        order = orders[epoch % tf.shape(orders)[0]]
        start = step * size
        indices = order[start:start + size]
        if static is not None:
            indices = tf.reshape(indices, [static])
        data = tf.nest.map_structure(lambda d: tf.gather(d, indices, axis=0) if d is not None else d, inputs)
        if to_weights is not None:
            data = to_weights(*data) if isinstance(data, tuple) else to_weights(data)
        return data

    return batch


def _fused_program(model, validation: bool, single: bool = True):
    """The model's ``tf.function`` that trains all of a fit's epochs (and validates after each, ``validation``),
    and the names of the metrics' results it returns (filled when it is traced).  Kept for the model until it is
    compiled again, as tf_keras keeps its ``train_function``: a random layer's ops (``Dropout``) are stateful,
    and a second fit draws on from where the first stopped, as in tf_keras.  One program with validation and
    one without (a program without a validation branch traces and runs about twice as fast for the sheet's
    small fits): a ``Dropout`` model fitted both with and without validation draws from two streams there,
    where tf_keras's one ``train_function`` draws from one."""
    import tensorflow as tf

    kept = _until_compiled(_programs, model)
    if validation in kept and (single or not kept[validation][0]._grader_single):
        return kept[validation]
    names = {}

    def results_of(kind):
        """The metrics' results now, as one float64 vector (their names kept in ``names[kind]``)."""
        results = model.get_metrics_result()
        for k, v in results.items():
            if v.shape.rank != 0 or v.dtype not in (tf.float32, tf.float64):
                raise _in_trace(f"a metric result that is not a float number ({k})")
        names[kind] = list(results)
        return tf.stack([tf.cast(v, tf.float64) for v in results.values()])

    def train(source, val_source, epochs, steps, val_steps):
        train_batch, val_batch = _batches(source), (_batches(val_source) if validation else None)
        train_logs = tf.TensorArray(tf.float64, size=epochs)
        val_logs = tf.TensorArray(tf.float64, size=epochs)
        for epoch in tf.range(epochs):  # the metrics were reset before the call
            for step in tf.range(steps):
                with _top_scope():
                    outputs = model.train_step(train_batch(epoch, step))
                with tf.control_dependencies(tf.nest.flatten(outputs)[:1]):
                    model._train_counter.assign_add(1)
            train_logs = train_logs.write(epoch, results_of("train"))
            if validation:  # as ``evaluate`` validates in tf_keras's fit
                for metric in model.metrics:
                    metric.reset_state()
                model._test_counter.assign(0)
                for step in tf.range(val_steps):
                    with _top_scope():
                        outputs = model.test_step(val_batch(epoch, step))
                    with tf.control_dependencies(tf.nest.flatten(outputs)[:1]):
                        model._test_counter.assign_add(1)
                val_logs = val_logs.write(epoch, results_of("val"))
            # reset for the next epoch here, where the step has been traced: the loss's metric exists from its
            # first step on (a trace without the double trace of variables made sees none at the epoch's start)
            _reset_unless(model, epoch + 1 >= epochs)
        return train_logs.stack(), (val_logs.stack() if validation else tf.zeros([0, 0], tf.float64))

    program = tf.function(train, autograph=True)
    program._grader_single, program._grader_loops = single, 3 if validation else 2
    kept[validation] = (program, names)
    return kept[validation]


def _until_compiled(store, model) -> dict:
    """The programs ``store`` keeps for ``model`` (a dict), kept until the model is compiled again, as tf_keras
    keeps its ``train_function`` and ``predict_function``: a new compile makes a new optimizer, loss and metrics."""
    compiled = (model.optimizer, model.compiled_loss, model.compiled_metrics)
    kept = store.get(model)
    if kept is None or any(a is not b for a, b in zip(kept[0], compiled)):
        kept = store[model] = (compiled, {})
    return kept[1]


def _executor(single: bool):
    """The context that traces and runs a program for TensorFlow's single-threaded executor (``single``) or for
    its threaded one."""
    from tensorflow.python.eager import context

    return context.function_executor_type(SINGLE_THREADED if single else "")


def _top_scope():
    """The name scope of a step in tf_keras's own ``train_function`` (the top one), for a step traced in the fused
    program's loops: what the step makes there (a model's weights, built in its first step, and the optimizer's
    slots) is named as in tf_keras's fit (``dense/kernel:0``, not ``while/while/dense/kernel:0``)."""
    import tensorflow as tf

    return tf.compat.v1.get_default_graph().name_scope(None)


def _reset_unless(model, last):
    """The model's metrics reset as their ``reset_state`` resets them, unless ``last`` (the fit's last epoch,
    after which tf_keras's fit leaves them as they are): each variable's value kept, reset, then selected, so the
    program holds no branch (which the single-threaded executor cannot run, ``_NOT_SINGLE``)."""
    import tensorflow as tf

    for metric in model.metrics:
        variables = list(metric.variables)
        kept = [v.read_value() for v in variables]
        metric.reset_state()
        for v, k in zip(variables, kept):
            v.assign(tf.where(last, k, v.read_value()))


#: TensorFlow's graph rewrites that change a step's arithmetic (the order of a product's factors, fused
#: kernels), turned off in the kernel: the single-threaded executor runs a loop's body without them, so that
#: tf_keras's own fit and the fused one compute each step alike
GRAPPLER = (("arithmetic_optimization", False), ("remapping", False))
#: and TensorFlow's oneDNN kernels, which its graph rewrite puts in a step where the loop's body has TensorFlow's own
TENSORFLOW_ENV = {"TF_ENABLE_ONEDNN_OPTS": "0"}
_state = {}
_programs = weakref.WeakKeyDictionary()  # model -> (its compile, {validation: (program, names)}): _until_compiled


#: what the last ``predict`` did: {"fused": bool, "why": why not, "executor": TensorFlow's}
predict_report = {}
_predict_programs = weakref.WeakKeyDictionary()  # model -> (its compile, {"single"/"threaded": program})


def _patch_predict(tf_keras):
    """``predict`` of one array without callbacks, every batch in one TensorFlow call (``_fused_predict``); any
    other is tf_keras's own.  tf_keras's loop calls TensorFlow once a batch, which is most of a small network's
    prediction: the decision-region grid the sheet plots (10,000 points, 313 batches) took 0.26 s, fused 0.02 s."""
    Model = tf_keras.Model
    original_predict = Model.predict

    @functools.wraps(original_predict)
    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, **kwargs):
        predict_report.clear()
        try:
            if steps is not None or callbacks is not None or kwargs:
                raise _Fallback("steps, callbacks or a generator's arguments")
            return _fused_predict(self, x, batch_size, verbose)
        except _Fallback as why:
            predict_report.update(fused=False, why=str(why)[:200])
        return original_predict(self, x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks,
                                **kwargs)

    Model.predict = predict


def _fused_predict(model, x, batch_size, verbose):
    """tf_keras's ``predict`` of one array: the batches its data handler cuts (the rows in order, its casts), its
    ``predict_step`` on each batch in turn in one ``tf.function`` call, the batches' outputs joined as tf_keras joins
    them, its progress bar's last line; the same numbers as tf_keras's predict, bit for bit
    (``tests/test_keras2.py``).  A model that is not built, has several outputs, or runs eagerly or with XLA
    (``jit_compile``, whose numbers are not the graph's), and a ``predict_step`` whose batches are not one tensor of
    the model's output's type, are a ``_Fallback``."""
    import numpy as np
    import tensorflow as tf
    from tf_keras.src import callbacks as callbacks_module
    from tf_keras.src.engine import data_adapter, training

    if not (isinstance(x, np.ndarray) and x.dtype.kind in "biuf" and x.ndim >= 1 and len(x)):
        raise _Fallback("data that is not one array of numbers")
    outputs = getattr(model, "outputs", None)
    if (not model.built or not outputs or len(tf.nest.flatten(outputs)) != 1 or model.run_eagerly
            or model._jit_compile or tf.inside_function() or model.distribute_strategy._should_use_with_coordinator
            or model._in_multi_worker_mode()):
        raise _Fallback("a model that is not built, has several outputs, or runs eagerly, with XLA or distributed")
    model._check_call_args("predict")
    verbose = training._get_verbosity(verbose, model.distribute_strategy)
    size = 32 if batch_size is None else batch_size  # tf_keras's default
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise _Fallback("a batch size that is not a positive number")
    with model.distribute_strategy.scope():
        # the batches tf_keras's data handler cuts for predict: the rows in order, ``size`` at a time, the last one
        # partial, from the array cast as tf_keras casts it (float64 to float32); cut in the program (``_batches``)
        inputs = data_adapter._process_tensorlike((x,))
        rows = len(x)
        steps = -(-rows // size)
        source = (tf.range(rows, dtype=tf.int64)[None, :], inputs, tf.constant(size, tf.int32),
                  size if rows % size == 0 else None, None)
        dtype = tf.nest.flatten(outputs)[0].dtype
        # kept until the model is compiled again (a layer changed, then the model compiled, predicts with the
        # change); one that needs the threaded executor keeps that program
        kept = _until_compiled(_predict_programs, model)
        args = (source, tf.constant(steps, tf.int32))
        for single in ((False,) if "threaded" in kept else (True, False)):
            key = "single" if single else "threaded"
            if key not in kept:
                kept[key] = tf.function(functools.partial(_predict_all, model, dtype), autograph=True)
            try:
                with _executor(single):
                    concrete = kept[key].get_concrete_function(_relaxed((source, None))[0], args[1])
            except Exception as e:
                raise _traced(e) from None
            if not single or _single_threaded(concrete, 1):
                break
        callbacks = callbacks_module.CallbackList(None, add_history=True, add_progbar=verbose != 0, model=model,
                                                  verbose=verbose, epochs=1, steps=steps)
        model._predict_counter.assign(0)
        callbacks.on_predict_begin()
        with _executor(single):
            result = concrete(*args)
        callbacks.on_predict_batch_end(steps - 1, {"outputs": result})
        callbacks.on_predict_end()
    predict_report.update(fused=True, why=None, executor="single-threaded" if single else "threaded")
    return result.numpy()


def _predict_all(model, dtype, source, steps):
    """Every batch's ``predict_step``, as tf_keras's ``predict_function`` runs each (counting them), joined."""
    import tensorflow as tf

    batch = _batches(source)
    outputs = tf.TensorArray(dtype, size=steps, infer_shape=False)
    for step in tf.range(steps):
        output = model.predict_step(batch(0, step))
        if not (isinstance(output, tf.Tensor) and output.dtype == dtype and output.shape.rank
                and output.shape[1:].is_fully_defined()):  # joined by tf_keras, as a ragged tensor or a structure
            raise _in_trace("a predict_step whose batches are not one tensor of the model's output's type and shape")
        with tf.control_dependencies([output]):
            model._predict_counter.assign_add(1)
        outputs = outputs.write(step, output)
    return outputs.concat()


def _patch_py_functions():
    """A ``tf.py_function``'s, ``tf.numpy_function``'s or ``tf.compat.v1.py_func``'s Python runs any
    ``tf.function`` it calls (a student's own, ``model.predict``) eagerly, on its own thread only (TensorFlow's
    switch for it is global; a ``tf.data`` map's Python op runs beside the fit's steps): the kernel's TensorFlow
    has one inter-op thread, which the Python op holds while the function it calls waits for it, so that fit
    (tf_keras's own as well as the fused one) never finished.  Ops it runs itself were eager already."""
    import threading

    from tensorflow.python.eager.polymorphic_function import eager_function_run, polymorphic_function
    from tensorflow.python.ops import script_ops

    here = threading.local()
    polymorphic_function.Function._run_functions_eagerly = property(
        lambda self: eager_function_run.RUN_FUNCTIONS_EAGERLY or getattr(here, "eager", False))
    original = script_ops._internal_py_func

    @functools.wraps(original)
    def _internal_py_func(func, *args, **kwargs):
        if not callable(func):
            return original(func, *args, **kwargs)

        @functools.wraps(func)
        def eager_inside(*a, **kw):
            was, here.eager = getattr(here, "eager", False), True
            try:
                return func(*a, **kw)
            finally:
                here.eager = was

        return original(eager_inside, *args, **kwargs)

    script_ops._internal_py_func = _internal_py_func


def _epochs_only(callbacks) -> bool:
    """Whether none of a fit's ``callbacks`` hears its training batches (tf_keras's own test, which its loop
    asks before calling any batch hook): batches run ``STEPS_PER_EXECUTION`` at a time change nothing they see."""
    if not callbacks:
        return True
    if not isinstance(callbacks, (list, tuple)):
        return False
    from tf_keras.src.callbacks import Callback

    return all(isinstance(c, Callback) and not c._implements_train_batch_hooks() for c in callbacks)


def _patch_fit(tf_keras, fused=True):
    """``fit`` of array data without callbacks (the course's) fused (``_fused_fit``); any other fit is
    tf_keras's own, running its batches ``STEPS_PER_EXECUTION`` at a time where nothing can tell (no callback
    that hears batches, no validation, the model's own setting untouched): tf_keras's per-batch and per-epoch
    Python loop is most of a small network's training (the sheet's 2000-epoch fits train about 5x faster fused)."""
    import inspect

    Model = tf_keras.Model
    original_fit = Model.fit
    _state.update(make_train_function=Model.make_train_function)
    signature = inspect.signature(original_fit)

    def stepped(self, *args, **kwargs):
        spe = getattr(self, "_steps_per_execution", None)
        callbacks = args[5] if len(args) > 5 else kwargs.get("callbacks")
        validation = (args[6] if len(args) > 6 else kwargs.get("validation_split"),
                      args[7] if len(args) > 7 else kwargs.get("validation_data"))
        try:
            plain = (spe is not None and _epochs_only(callbacks) and not any(validation)
                     and int(spe.numpy()) == 1)
        except Exception:
            plain = False
        if not plain:
            return original_fit(self, *args, **kwargs)
        self._configure_steps_per_execution(STEPS_PER_EXECUTION)
        self.train_function = self.test_function = None  # rebuilt for the new setting
        try:
            return original_fit(self, *args, **kwargs)
        finally:
            self._configure_steps_per_execution(1)
            self.train_function = self.test_function = None

    @functools.wraps(original_fit)
    def fit(self, *args, **kwargs):
        last_report.clear()
        if "nb_epoch" in kwargs:  # Keras 1's name, which Keras 2 still took
            kwargs.setdefault("epochs", kwargs.pop("nb_epoch"))
            USED.add("nb_epoch")
        if not fused:
            last_report.update(fused=False, fused_fallback="the fused fit is turned off (GRADER_FUSED=0)")
            return stepped(self, *args, **kwargs)
        try:
            try:
                bound = signature.bind(self, *args, **kwargs)
                kw = {k: v for k, v in bound.arguments.items() if k in _FIT_ARGS}
                if set(bound.arguments) - set(_FIT_ARGS) - {"self"}:
                    raise _Fallback("arguments tf_keras keeps for compatibility")
            except TypeError:
                raise _Fallback("arguments tf_keras refuses") from None
            return _fused_fit(self, kw)
        except _Fallback as why:
            last_report.update(fused=False, fused_fallback=str(why)[:200])
        return stepped(self, *args, **kwargs)

    fit.grader_report = last_report
    Model.fit = fit


class _Missing(importlib.abc.MetaPathFinder):
    """Imports of ``name`` (and its submodules) fail as if it were not installed."""

    def __init__(self, name):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name or fullname.startswith(self.name + "."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@contextlib.contextmanager
def _without(name):
    """While TensorFlow is imported: ``name`` is not importable unless it is imported already.  TensorFlow's
    import loads JAX (when installed) only for TFLite's converter of JAX functions, a third of a second of
    the kernel's start on this path; it stays importable afterwards."""
    finder = None if name in sys.modules else _Missing(name)
    if finder is not None:
        sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        if finder is not None:
            sys.meta_path.remove(finder)


def install(fused=True):
    """Make this kernel a Keras 2 one (see the module's docstring); True when it is."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.update(TENSORFLOW_ENV)
    with _without("jax"):  # first: its own imports of its leftover keras modules must find them
        import tensorflow
    import tf_keras

    try:  # one thread, as the Keras 3 kernels' XLA: a course's networks are too small for more to help
        tensorflow.config.threading.set_inter_op_parallelism_threads(1)
        tensorflow.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:
        pass
    tensorflow.config.optimizer.set_experimental_options(dict(GRAPPLER))

    for name in [n for n in sys.modules if n in ROOTS or n.startswith(tuple(r + "." for r in ROOTS))]:
        _real[name] = sys.modules.pop(name)
    sys.meta_path.insert(0, Aliases())
    # ``from tensorflow.python import keras`` reads the package's attribute, which TensorFlow's import set to its
    # leftover (whose ``optimizers`` has no ``Adam``), before it looks at any finder: the alias there too
    python = sys.modules.get("tensorflow.python")
    if python is not None:
        python.keras = importlib.import_module("tensorflow.python.keras")
    used = USED
    for name in OPTIMIZERS:
        cls = getattr(tf_keras.optimizers, name, None)
        if cls is not None:
            _keras2_optimizer(cls, used)
            if name.lower() in LOWER_OPTIMIZERS and not hasattr(tf_keras.optimizers, name.lower()):
                setattr(tf_keras.optimizers, name.lower(), cls)  # Keras 2.2's ``from keras.optimizers import adam``
    _keras1_dense(tf_keras.layers.Dense, used)
    from tf_keras.src import backend as private_backend

    for name in ("set_session", "get_session"):  # Keras 2's ``K.set_session(tf.compat.v1.Session(...))``
        if not hasattr(tf_keras.backend, name):
            setattr(tf_keras.backend, name, getattr(private_backend, name))
    # TensorFlow 1's names, which Keras 2 code of its days calls (``tf.set_random_seed(0)``): as TensorFlow 2 has them
    for name, moved in (("set_random_seed", tensorflow.compat.v1.set_random_seed),
                        ("logging", tensorflow.compat.v1.logging)):
        if not hasattr(tensorflow, name):
            setattr(tensorflow, name, moved)
    _graph_mode_optimizers(tf_keras, used)
    _patch_models(tf_keras, used)
    _patch_fit(tf_keras, fused)
    _patch_py_functions()
    if fused:
        _patch_predict(tf_keras)
        _share_reads(tf_keras)
    # ``from keras.utils import np_utils`` looks for the attribute on tf_keras's module first
    for api in ("tf_keras", "tf_keras.api._v2.keras"):
        module = sys.modules.get(api)
        if module is not None:
            for public, private in PRIVATE.items():
                package, _, leaf = public.partition(".")
                parent = getattr(module, package, None)
                if parent is not None and not hasattr(parent, leaf):
                    setattr(parent, leaf, importlib.import_module(f"tf_keras.{private}"))
    return True
