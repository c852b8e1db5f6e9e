"""TensorFlow imported when it is first used, not when it is imported: run in the student's kernel.

Imports nothing of the grader (the runner's first start-up file, JAX backend only).  ``install()`` puts a
``tensorflow`` module in ``sys.modules`` whose ``tensorflow.keras`` is Keras' own; the first other use loads
the real TensorFlow into that same module object.  ``tf.random.set_seed``, ``isinstance`` checks against
TensorFlow classes, ``tf.executing_eagerly`` and ``tf.is_tensor`` are answered without loading it.
``GRADER_DEFERRED_TF=0`` turns it off.  Why each answer is exact: docs/design/execute.md.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types

#: TensorFlow classes Keras checks objects against on the JAX backend (serialisation): stand-ins until loaded
_CLASSES = ("TensorShape", "DType", "TypeSpec", "Tensor", "Variable", "SparseTensor", "RaggedTensor")

#: TensorFlow functions Keras or matplotlib call on the JAX backend, and what they return before it is loaded
_ANSWERS = {"executing_eagerly": True, "is_tensor": False}

_state = {"seed": None, "seeded": False, "loaded": False, "module": None}


def _keras_dir(name: str) -> str | None:
    """The folder TensorFlow's ``__init__`` puts first on its ``__path__`` for ``name`` (its
    ``_module_util.get_parent_dir_for_name``): Keras' package folder joined with the middle of ``name``."""
    parts = name.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if not spec or not spec.origin:
        return None
    return os.path.join(os.path.dirname(spec.origin), *parts[1:-1])


def _load(module: types.ModuleType) -> types.ModuleType:
    """Run TensorFlow's real ``__init__`` in ``module`` (once), then apply a seed set meanwhile."""
    if _state["loaded"]:
        return module
    _state["loaded"] = True
    module.__class__ = types.ModuleType  # from here on, plain attribute look-ups (the real __init__ runs in it)
    for name in ("random", *_ANSWERS, *_CLASSES):
        module.__dict__.pop(name, None)  # the stand-ins go; the real __init__ binds the real ones
    spec = module.__spec__
    path = module.__path__  # the list an import under way may hold: kept, and made the real path below
    module.__path__ = list(spec.submodule_search_locations)  # the real __init__ adds Keras' folders itself
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("tensorflow", None)  # as a failed import leaves it: absent, so that a retry imports
        raise
    finally:
        path[:] = module.__path__
        module.__path__ = path
    if _state["seeded"]:
        module.random.set_seed(_state["seed"])
    return module


class _DeferredTensorFlow(types.ModuleType):
    """The ``tensorflow`` module before its ``__init__`` has run (see the module doc)."""

    def __getattr__(self, name):  # only for names the module does not hold yet
        if name == "keras":  # ``from tensorflow import keras``: Keras' tf.keras API, as TensorFlow gives it
            return importlib.import_module("tensorflow.keras")
        return getattr(_load(self), name)

    def __dir__(self):
        return dir(_load(self))


class _DeferredRandom:
    """``tf.random`` before TensorFlow is loaded: ``set_seed`` is kept, anything else loads it."""

    @staticmethod
    def set_seed(seed):
        _state["seed"], _state["seeded"] = seed, True

    def __getattr__(self, name):
        return getattr(_load(_state["module"]).random, name)


def _answer(name: str):
    """The function ``tf.<name>`` before TensorFlow is loaded: ``_ANSWERS[name]`` until then, the real one's
    answer after."""
    def stand_in(*args, **kwargs):
        if _state["loaded"]:
            return getattr(_state["module"], name)(*args, **kwargs)
        return _ANSWERS[name]

    stand_in.__name__ = stand_in.__qualname__ = name
    return stand_in


class _StandInMeta(type):
    """A TensorFlow class before TensorFlow is loaded: nothing is an instance of it until then."""

    def __instancecheck__(cls, obj):
        if not _state["loaded"]:
            return False
        return isinstance(obj, getattr(_state["module"], cls.__name__))

    def __subclasscheck__(cls, sub):
        if not _state["loaded"]:
            return False
        return issubclass(sub, getattr(_state["module"], cls.__name__))

    def __new__(mcs, name, bases, namespace, **kwargs):
        if namespace.pop("_grader_stand_in", False):
            return super().__new__(mcs, name, bases, namespace)
        # a class derived from a stand-in: it derives from the real class (TensorFlow is loaded for it)
        _load(_state["module"])
        real = tuple(getattr(_state["module"], b.__name__) if isinstance(b, _StandInMeta) else b for b in bases)
        meta, _, kwds = types.prepare_class(name, real, kwargs)
        return meta(name, real, dict(namespace), **kwds)

    def __call__(cls, *args, **kwargs):
        return getattr(_load(_state["module"]), cls.__name__)(*args, **kwargs)

    def __getattr__(cls, name):
        return getattr(getattr(_load(_state["module"]), cls.__name__), name)


def install() -> bool:
    """Put the deferred ``tensorflow`` in ``sys.modules``; False (and nothing changed) where TensorFlow is
    already imported or not installed."""
    if "tensorflow" in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec("tensorflow")
    except (ImportError, ValueError):
        return False
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return False
    module = importlib.util.module_from_spec(spec)
    # TensorFlow's __init__ puts these first on its path: tensorflow.keras is Keras' tf.keras API
    front = [d for d in (_keras_dir("keras.api._v2.keras"), _keras_dir("keras._tf_keras.keras")) if d]
    module.__path__ = front + list(spec.submodule_search_locations)
    module.random = _DeferredRandom()
    for name in _ANSWERS:
        setattr(module, name, _answer(name))
    for name in _CLASSES:
        setattr(module, name, _StandInMeta(name, (), {"__module__": "tensorflow", "_grader_stand_in": True}))
    module.__class__ = _DeferredTensorFlow
    _state["module"] = module
    sys.modules["tensorflow"] = module
    sys.meta_path.insert(0, _LoadFirst)
    return True


class _Existing:
    """The loader of a module the real ``__init__`` imported while an import of it was being looked up:
    that module, as it is (its own spec kept)."""

    def __init__(self, module):
        self.module, self.spec = module, module.__spec__

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        module.__spec__ = self.spec


class _LoadFirst:
    """An import of any ``tensorflow.<name>`` but Keras' API before TensorFlow is loaded loads it first."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if _state["loaded"] or not fullname.startswith("tensorflow."):
            return None
        if fullname == "tensorflow.keras" or fullname.startswith("tensorflow.keras."):
            return None
        _load(_state["module"])
        if fullname in sys.modules:  # the real __init__ imported it
            module = sys.modules[fullname]
            return importlib.util.spec_from_loader(fullname, _Existing(module),
                                                   is_package=hasattr(module, "__path__"))
        return None  # the path the import holds is the real one now: the usual finders find it

