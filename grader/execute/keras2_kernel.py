"""Keras 2 in a student's kernel (the Keras 2 path, ``keras2``); runs there at start, imports nothing of the grader.

``install()`` imports TensorFlow with ``TF_USE_LEGACY_KERAS=1`` (so ``tensorflow.keras`` is tf_keras, Keras 2)
and makes the names Keras 2 code imports lead to tf_keras: ``keras`` and ``tensorflow.python.keras`` with their
submodules, the private ones Keras 2 still had (``keras.utils.np_utils``, ``keras.layers.core``).  Then it runs
as it meant what even tf_keras changed or dropped: ``Adam(lr=...)`` (tf_keras ignores ``lr``) and ``decay=``
(Keras 2's time-based decay), ``predict_classes``/``predict_proba``, and ``model.save('name')`` without an
extension (a SavedModel folder in Keras 2, which no grader loads: saved as ``name.h5``, and ``load_model('name')``
finds it).  A failure leaves the kernel as TensorFlow makes it; the student's cells then say what failed.
"""
import functools
import importlib
import importlib.abc
import importlib.util
import os
import sys

#: the names Keras 2 code imports Keras by, and what they lead to
ROOTS = ("tensorflow.python.keras", "keras")
#: what Keras 2 had public and tf_keras keeps in its private tree
PRIVATE = {"utils.np_utils": "src.utils.np_utils", "layers.core": "src.layers.core"}
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
        if "lr" in kwargs:
            lr = kwargs.pop("lr")
            if not args and "learning_rate" not in kwargs:
                kwargs["learning_rate"] = lr
            used.add("lr")
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
        original(self, *args, **kwargs)

    cls.__init__ = __init__


def _no_extension(path):
    return isinstance(path, (str, os.PathLike)) and not os.path.splitext(os.fspath(path).rstrip("/"))[1]


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
        if not args and kwargs.get("save_format") is None and _no_extension(filepath):
            filepath = os.fspath(filepath).rstrip("/") + ".h5"
            used.add("save")
        return original_save(self, filepath, *args, **kwargs)

    Model.save = save

    from tf_keras.src.saving import saving_api

    original_load = saving_api.load_model

    @functools.wraps(original_load)
    def load_model(filepath, *args, **kwargs):
        if _no_extension(filepath) and not os.path.exists(filepath) and os.path.isfile(os.fspath(filepath) + ".h5"):
            filepath = os.fspath(filepath) + ".h5"  # what save('name') wrote above
        return original_load(filepath, *args, **kwargs)

    saving_api.load_model = load_model
    for name in ("tf_keras.models", "tf_keras.api._v2.keras.models", "tf_keras.api._v1.keras.models",
                 "tf_keras.src.models", "tf_keras.src.saving"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "load_model", None) is original_load:
            module.load_model = load_model


#: batches a fit runs per call into TensorFlow (tf_keras's ``steps_per_execution``: the same batches, updates and
#: weights, bit for bit; only a callback's per-batch hooks would see fewer calls, so a fit with callbacks keeps 1,
#: and so does one with validation data, which it made slower)
STEPS_PER_EXECUTION = 64


def _patch_fit(tf_keras):
    """``fit`` running its batches ``STEPS_PER_EXECUTION`` at a time where nothing can tell (no callbacks, no
    validation, the model's own setting untouched): tf_keras's per-batch Python loop is most of a small network's
    training (about a third less time for the sheet's fits)."""
    Model = tf_keras.Model
    original_fit = Model.fit

    @functools.wraps(original_fit)
    def fit(self, *args, **kwargs):
        spe = getattr(self, "_steps_per_execution", None)
        callbacks = args[5] if len(args) > 5 else kwargs.get("callbacks")
        validation = (args[6] if len(args) > 6 else kwargs.get("validation_split"),
                      args[7] if len(args) > 7 else kwargs.get("validation_data"))
        try:
            plain = spe is not None and not callbacks and not any(validation) and int(spe.numpy()) == 1
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

    Model.fit = fit


def install():
    """Make this kernel a Keras 2 one (see the module's docstring); True when it is."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow  # first: its own imports of its leftover keras modules must find them
    import tf_keras

    try:  # one thread, as the Keras 3 kernels' XLA: a course's networks are too small for more to help
        tensorflow.config.threading.set_inter_op_parallelism_threads(1)
        tensorflow.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:
        pass

    for name in [n for n in sys.modules if n in ROOTS or n.startswith(tuple(r + "." for r in ROOTS))]:
        _real[name] = sys.modules.pop(name)
    sys.meta_path.insert(0, Aliases())
    used = USED
    for name in OPTIMIZERS:
        cls = getattr(tf_keras.optimizers, name, None)
        if cls is not None:
            _keras2_optimizer(cls, used)
    _patch_models(tf_keras, used)
    _patch_fit(tf_keras)
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
