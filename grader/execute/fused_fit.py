"""Fused training: ``keras.Model.fit`` run as a few compiled programs instead of one Python loop per batch.

Imports nothing of the grader: run in the student's kernel (beneath the capture hook) and imported by the
grader's training processes.  ``install()`` replaces ``keras.Model.fit`` with ``fit``, which trains the
course's subset with Keras' own ``train_step``, data preparation and epoch orders (``_fused``), and hands
anything else to Keras' own ``fit``; ``last_report`` says which and why.  Compiled programs are found by
``_program_key`` and reused across epochs counts.  The subset, and why it is Keras' semantics by
construction: docs/design/execute.md.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import time
import warnings

#: what the last call of ``fit`` did: {"fused": bool, "fused_fallback": why not (None when fused), ...}
last_report: dict = {}

_ALLOWED_OPTIMIZERS = ("SGD", "Adam", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam", "AdamW")
_ALLOWED_LAYERS = ("InputLayer", "Dense", "Activation", "Dropout")
#: the permutations of one chunk of epochs hold at most this many indices (chunk_epochs)
_CHUNK_INDICES = 1 << 18
_MAX_CHUNK = 128
_MAX_PROGRAMS = 64  # compiled programs kept in this process

_state = {"installed": False, "original": None, "programs": {}, "cache_events": 0}


class _Fallback(Exception):
    """Outside the fused subset: Keras' own fit trains, for the reason given."""


def chunk_epochs(num_samples: int) -> int:
    """Epochs per compiled chunk: a power of two, at most 128, with at most 2**18 indices per chunk."""
    e = _MAX_CHUNK
    while e > 1 and e * max(num_samples, 1) > _CHUNK_INDICES:
        e //= 2
    return e


# -- the subset ---------------------------------------------------------------------------------------------

def _is_keras(obj) -> bool:
    module = getattr(obj, "__module__", "") or ""
    return module == "keras" or module.startswith("keras.")


def _is_array(a) -> bool:
    import numpy as np

    if isinstance(a, np.ndarray):
        return a.dtype != object
    try:
        import jax

        return isinstance(a, jax.Array)
    except Exception:  # pragma: no cover
        return False


def _check_model(model) -> None:
    import keras
    from keras.src.models.functional import Functional
    from keras.src.models.sequential import Sequential

    if keras.backend.backend() != "jax":
        raise _Fallback(f"the {keras.backend.backend()} backend")
    if type(model) not in (Sequential, Functional):
        raise _Fallback(f"a model of class {type(model).__name__} (only Sequential and functional models)")
    if not model.compiled:
        raise _Fallback("the model is not compiled")
    if model.run_eagerly or not model.jit_compile:
        raise _Fallback("run_eagerly or jit_compile=False")
    if getattr(model, "steps_per_execution", 1) != 1:
        raise _Fallback("steps_per_execution")
    if getattr(model, "_initial_epoch", None):
        raise _Fallback("an initial epoch set by a callback")
    try:
        from keras.src.distribution import distribution_lib

        if distribution_lib.distribution() is not None:
            raise _Fallback("a distribution")
    except ImportError:  # pragma: no cover
        pass
    if getattr(model.dtype_policy, "name", None) != "float32":
        raise _Fallback(f"the dtype policy {getattr(model.dtype_policy, 'name', '?')}")
    try:
        ends = (model.inputs, model.outputs)
    except (AttributeError, ValueError):  # a Sequential model without an input shape: built by fit
        ends = None
    if ends is not None and any(len(e or ()) != 1 for e in ends):
        raise _Fallback("a model with several inputs or outputs")
    _check_layers(model)
    _check_optimizer(model)
    _check_loss_and_metrics(model)


def _check_layers(model) -> None:
    for layer in model._flatten_layers(include_self=False):
        name = type(layer).__name__
        if name not in _ALLOWED_LAYERS or not _is_keras(type(layer)):
            raise _Fallback(f"a {name} layer")
        if getattr(layer.dtype_policy, "name", "float32") != "float32":
            raise _Fallback(f"a {name} layer of dtype policy {layer.dtype_policy.name}")
        for attr in ("activation", "kernel_initializer", "bias_initializer", "kernel_regularizer",
                     "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint"):
            value = getattr(layer, attr, None)
            if value is not None and not _is_keras(value if callable(value) and not hasattr(value, "get_config")
                                                   else type(value)):
                raise _Fallback(f"a custom {attr.replace('_', ' ')} in a {name} layer")
        if name == "Dropout" and (getattr(layer, "noise_shape", None) or (None,))[0] is not None:
            # its mask's shape names the batch size: the last partial batch computes otherwise (Keras fails
            # there), and the steps are traced at the first batch's size only (``_step``)
            raise _Fallback("a Dropout noise shape that names the batch size")
        if name == "Dense" and getattr(layer, "lora_enabled", False):
            raise _Fallback("a LoRA Dense layer")
        if name == "Dense" and getattr(layer, "quantization_mode", None):
            raise _Fallback("a quantized Dense layer")
    if model.losses:
        raise _Fallback("losses added with add_loss")


def _check_optimizer(model) -> None:
    import keras

    opt = model.optimizer
    if type(opt).__name__ not in _ALLOWED_OPTIMIZERS or not _is_keras(type(opt)):
        raise _Fallback(f"the optimizer {type(opt).__name__}")
    if getattr(opt, "use_ema", False):
        raise _Fallback("an optimizer with use_ema")
    if getattr(opt, "gradient_accumulation_steps", None):
        raise _Fallback("an optimizer with gradient_accumulation_steps")
    if getattr(opt, "loss_scale_factor", None):
        raise _Fallback("an optimizer with loss_scale_factor")
    lr = getattr(opt, "_learning_rate", None)
    if callable(lr) and not isinstance(lr, keras.Variable) and not _is_keras(type(lr)):
        raise _Fallback("a learning-rate schedule of its own")


def _check_loss_and_metrics(model) -> None:
    loss = model.loss
    if isinstance(loss, (list, tuple, dict)):
        losses = list(loss.values()) if isinstance(loss, dict) else list(loss)
        if len(losses) != 1:
            raise _Fallback("several losses")
        loss = losses[0]
    if loss is None:
        raise _Fallback("no loss")
    if not isinstance(loss, str) and not _is_keras(loss if not hasattr(loss, "get_config") else type(loss)):
        raise _Fallback("a loss of its own")
    cm = model._compile_metrics
    if cm is not None:
        for group in (getattr(cm, "_user_metrics", None), getattr(cm, "_user_weighted_metrics", None)):
            for m in _flat(group):
                if m is None or isinstance(m, str):
                    continue
                if not _is_keras(m if not hasattr(m, "get_config") else type(m)):
                    raise _Fallback("a metric of its own")
    if getattr(model, "_metrics", None):
        raise _Fallback("metrics tracked by the model itself")


def _flat(value):
    if value is None:
        return []
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flat(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    return [value]


def _check_args(x, y, kw) -> None:
    if not _is_array(x):
        raise _Fallback(f"x of type {type(x).__name__} (only NumPy or JAX arrays)")
    if y is None or not _is_array(y):
        raise _Fallback(f"y of type {type(y).__name__} (only NumPy or JAX arrays)")
    if kw.get("sample_weight") is not None:
        raise _Fallback("sample_weight")
    if kw.get("steps_per_epoch") is not None:
        raise _Fallback("steps_per_epoch")
    if kw.get("initial_epoch", 0) != 0:
        raise _Fallback("initial_epoch")
    if kw.get("validation_steps") is not None:
        raise _Fallback("validation_steps")
    if kw.get("validation_freq", 1) != 1:
        raise _Fallback("validation_freq")
    epochs = kw.get("epochs", 1)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise _Fallback(f"epochs={epochs!r}")
    batch = kw.get("batch_size")
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise _Fallback(f"batch_size={batch!r}")
    for name in ("validation_batch_size",):
        value = kw.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise _Fallback(f"{name}={value!r}")
    shuffle = kw.get("shuffle", True)
    if not (isinstance(shuffle, bool) or shuffle == "batch"):
        raise _Fallback(f"shuffle={shuffle!r}")
    cw = kw.get("class_weight")
    if cw is not None and not isinstance(cw, dict):
        raise _Fallback("a class_weight that is not a dict")
    split = kw.get("validation_split", 0.0)
    if not isinstance(split, (int, float)) or isinstance(split, bool) or not 0 <= split < 1:
        raise _Fallback(f"validation_split={split!r}")
    vd = kw.get("validation_data")
    if vd is not None:
        if not isinstance(vd, (tuple, list)) or len(vd) not in (2, 3) or not all(_is_array(a) for a in vd[:2]):
            raise _Fallback("validation_data that is not a tuple of arrays")
        if len(vd) == 3 and vd[2] is not None:
            raise _Fallback("validation sample weights")
    callbacks = kw.get("callbacks")
    if callbacks is not None:
        from keras.callbacks import History, ProgbarLogger

        if not isinstance(callbacks, (list, tuple)):
            raise _Fallback(f"callbacks of type {type(callbacks).__name__}")
        for cb in callbacks:
            if type(cb) not in (History, ProgbarLogger):
                raise _Fallback(f"the callback {type(cb).__name__}")


_FIT_ARGS = ("x", "y", "batch_size", "epochs", "verbose", "callbacks", "validation_split", "validation_data",
             "shuffle", "class_weight", "sample_weight", "initial_epoch", "steps_per_epoch", "validation_steps",
             "validation_batch_size", "validation_freq")


def _arguments(args, kwargs) -> dict:
    if len(args) > len(_FIT_ARGS):
        raise _Fallback("too many positional arguments")
    kw = dict(zip(_FIT_ARGS, args))
    for k, v in kwargs.items():
        if k not in _FIT_ARGS:
            raise _Fallback(f"the argument {k}")
        if k in kw:
            raise _Fallback(f"{k} given twice")
        kw[k] = v
    return kw


# -- the compiled program -----------------------------------------------------------------------------------

def _program(model, n, batch, n_val, val_batch, has_sw, log_spec):
    """The function of one chunk of epochs: (state, perms, active, reset, data...) -> (state, per-epoch logs)."""
    import jax
    from jax import lax
    from jax import numpy as jnp

    full, part = divmod(n, batch)
    vfull, vpart = divmod(n_val, val_batch) if n_val else (0, 0)

    def batches(step, state, arrays, full, part, size):
        logs = None
        if full:
            stacked = tuple(a[: full * size].reshape((full, size) + a.shape[1:]) for a in arrays)

            def body(st, data):
                out, st = step(st, data)
                return st, out

            state, seq = lax.scan(body, state, stacked)
            logs = jax.tree_util.tree_map(lambda v: v[-1], seq)
        if part:
            logs, state = step(state, tuple(a[full * size:] for a in arrays))
        return state, logs

    def chunk(state, perms, active, reset, x, y, sw, vx, vy):
        def epoch(st, inputs):
            perm, on = inputs

            def run(st):
                tv, ntv, ov, _ = st
                arrays = (x[perm], y[perm]) + ((sw[perm],) if has_sw else ())
                (tv, ntv, ov, mv), logs = batches(model.train_step, (tv, ntv, ov, list(reset)), arrays,
                                                  full, part, batch)
                out = {"train": logs}
                if n_val:
                    (tv, ntv, mv), vlogs = batches(model.test_step, (tv, ntv, list(reset)), (vx, vy),
                                                   vfull, vpart, val_batch)
                    out["val"] = vlogs
                out = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), out)
                return (tv, ntv, ov, mv), out

            def skip(st):
                return st, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, jnp.float32), log_spec)

            return lax.cond(on, run, skip, st)

        return lax.scan(epoch, state, (perms, active))

    return chunk


def _step(model, n, batch, n_val, val_batch, has_sw, state, x, y, sw, vx, vy, reset):
    """An epoch's first training step and first validation step, traced (a few hundredths of a second): their
    jaxpr, and the structure of one epoch's logs (shapes and dtypes).  The steps of other batch sizes (the
    last, partial one) run the same code on other shapes: nothing in the fused subset computes otherwise by
    the batch's size (a Dropout noise shape that names it falls back, ``_check_model``)."""
    import jax
    from jax import numpy as jnp

    full, part = divmod(n, batch)

    def one(state, x, y, sw, vx, vy, reset):
        tv, ntv, ov, _ = state
        size = batch if full else part
        data = (x[:size], y[:size]) + ((sw[:size],) if has_sw else ())
        logs, _ = model.train_step((tv, ntv, ov, list(reset)), data)
        out = {"train": logs}
        if n_val:
            vsize = min(val_batch, n_val)
            vlogs, _ = model.test_step((tv, ntv, list(reset)), (vx[:vsize], vy[:vsize]))
            out["val"] = vlogs
        return jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), out)

    return jax.make_jaxpr(one, return_shape=True)(state, x, y, sw, vx, vy, reset)


# -- finding a compiled program without lowering it ----------------------------------------------------------
#
# Lowering a chunk program to StableHLO costs 0.1-0.2 s a fit, more than the training of most of the
# sheet's tasks, even when the compiled code then comes from JAX's persistent cache (whose key is the
# lowered program).  But the chunk program is made, by this file's code, from the traced computation of the
# training and validation steps (``_step``), the data's shapes and the chunk's (``key_parts``), and compiled
# under JAX's settings.  So a program is kept in this process, and stored by the compile cache's builder,
# under the hash of those: the steps' jaxpr as printed and the values of the constants it captured, JAX's
# settings, every input's shape, dtype and structure, and the names of the logs.  Whatever changes the
# computation changes the jaxpr (a setting missing from a Keras object's config, a patched Keras, an
# epsilon), so nothing but the computation is trusted.  The code that turns the step into a chunk is the
# same by construction: the compile cache's folder is keyed by the versions of JAX, Keras and this file,
# and a process's own programs by this file's code.

#: the compile cache's sub-folder of compiled programs stored by ``_program_key`` (written by its builder)
PROGRAMS_DIR = "programs"
_MAX_STORED_BYTES = 64 << 20
#: JAX settings that change no program: where caches and dumps go, what is logged or printed (the builder and
#: the kernels differ in some of them)
_UNCOMPILED_FLAG_WORDS = ("cache", "log", "dump", "traceback", "pprint", "timeout", "profil")


def _program_key(step, spec, key_parts, args) -> str | None:
    """The key of the chunk program made from ``step`` (the traced steps) for ``args``; None when a captured
    constant has no bytes to hash (the program is then lowered and compiled each time: JAX's persistent
    cache, keyed by the lowered program, may still serve it)."""
    import jax
    import numpy as np

    try:
        h = hashlib.sha256()
        leaves, tree = jax.tree_util.tree_flatten(args)
        # printed in one layout wherever it runs (JAX colours its text in a Jupyter kernel, say)
        text = step.jaxpr.pretty_print(source_info=False, print_shapes=True, custom_pp_eqn_rules=True,
                                       name_stack=False, print_effects=True, use_color=False, width=80)
        # and JAX's settings, some of which act only when the program is compiled (the threefry kernels Dropout
        # draws with): all but those naming where files go and what is logged
        flags = repr(sorted((k, repr(v)) for k, v in jax.config.values.items()
                            if not any(word in k for word in _UNCOMPILED_FLAG_WORDS)))
        if " at 0x" in flags:
            return None  # a setting with no lasting text: no key can stand for it
        for part in (text, flags, repr(key_parts), str(tree), " ".join(str(jax.typeof(a)) for a in leaves),
                     str(spec)):  # the logs' names and shapes
            h.update(part.encode("utf-8") + b"\0")
        for const in step.consts:
            value = np.asarray(const)
            if value.dtype == object:
                return None
            h.update(f"{value.dtype}{value.shape}".encode() + b"\0" + value.tobytes())
    except Exception:
        return None
    return h.hexdigest()


def _stored_path(key: str):
    from pathlib import Path

    store = _state.get("store")
    return Path(store) / PROGRAMS_DIR / f"{key}.program" if store else None


def _load_stored(key: str):
    """The program the compile cache's builder stored for ``key``, or None.  The folder is the grader's
    (bound read-only in the sandbox): a regular file, not a link, of a bounded size."""
    import os
    import pickle
    import stat

    path = _stored_path(key)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_STORED_BYTES:
                return None
            serialized, in_tree, out_tree = pickle.loads(f.read())
        from jax.experimental import serialize_executable

        return serialize_executable.deserialize_and_load(serialized, in_tree, out_tree)
    except Exception:
        return None


def _store(key: str, compiled) -> None:
    """Store ``compiled`` for ``key`` (the builder: a writable cache), whole or not at all."""
    import os
    import pickle
    import tempfile

    path = _stored_path(key)
    if path is None or not _state.get("store_writable") or path.exists():
        return
    tmp = None
    try:
        from jax.experimental import serialize_executable

        payload = pickle.dumps(serialize_executable.serialize(compiled))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except Exception:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _lowered(model, n, batch, n_val, val_batch, has_sw, args, spec):
    """The chunk program, traced and lowered."""
    import jax

    fn = _program(model, n, batch, n_val, val_batch, has_sw, spec)

    def grader_fused_chunk(*a):
        return fn(*a)

    return jax.jit(grader_fused_chunk).lower(*args)


def _compiled(model, key_parts, n, batch, n_val, val_batch, has_sw, args):
    """The compiled chunk program for these shapes: found by ``_program_key`` among this process's programs
    or those the compile cache's builder stored, else lowered and compiled (JAX's persistent cache, when
    configured, may serve it).  Returns (the program, where it came from: "memory", "stored", "disk" or
    "compiled", seconds spent)."""
    t0 = time.perf_counter()
    state, perms, active, reset, x, y, sw, vx, vy = args
    step, spec = _step(model, n, batch, n_val, val_batch, has_sw, state, x, y, sw, vx, vy, reset)
    key = _program_key(step, spec, key_parts, args)
    programs = _state["programs"]
    if key is not None and key in programs:
        programs[key] = programs.pop(key)  # most recently used last
        return programs[key], "memory", time.perf_counter() - t0
    compiled = _load_stored(key) if key is not None else None
    how = "stored"
    if compiled is None:
        before = _state["cache_events"]
        compiled = _lowered(model, n, batch, n_val, val_batch, has_sw, args, spec).compile()
        how = "disk" if _state["cache_events"] > before else "compiled"
        if key is not None:
            _store(key, compiled)
    if key is not None:
        programs[key] = compiled
        while len(programs) > _MAX_PROGRAMS:
            programs.pop(next(iter(programs)))
    return compiled, how, time.perf_counter() - t0


# -- fit ----------------------------------------------------------------------------------------------------

def _orders(num_samples, batch, epochs, shuffle):
    """The index order of each of ``epochs`` epochs, drawn as Keras' array adapter draws them."""
    import numpy as np

    out = np.empty((epochs, num_samples), dtype=np.int32)
    for e in range(epochs):
        if shuffle == "batch":
            for start in range(0, num_samples, batch):
                stop = min(start + batch, num_samples)
                out[e, start:stop] = np.random.permutation(stop - start) + start
        elif shuffle:
            out[e] = np.random.permutation(num_samples)
        else:
            out[e] = np.arange(num_samples)
    return out


def _device_arrays(adapter):
    """The adapter's (x, y, sample weights) as whole device arrays, converted as Keras converts its batches."""
    import jax
    from keras.src import tree
    from keras.src.trainers.data_adapters import array_slicing

    inputs = array_slicing.convert_to_sliceable(adapter._inputs, target_backend="jax")
    whole = slice(0, adapter._num_samples)

    def convert(s):
        return jax.device_put(s.convert_to_jax_compatible(s[whole]))

    converted = tree.map_structure(convert, inputs, none_is_leaf=False)
    if not isinstance(converted, tuple):
        converted = (converted,)
    return converted


def _fused(model, kw):
    """Train as Keras' JAX ``fit`` would (see the module doc); returns the History."""
    verbose = kw.get("verbose", "auto")
    epochs, epoch_iterator, validation = _prologue(model, kw)
    run = _prepare(model, epoch_iterator, validation, kw.get("validation_batch_size") or kw.get("batch_size"))
    training_logs, seconds = _epochs(model, kw, run, epochs, epoch_iterator.num_batches, verbose)
    last_report.update(fused=True, fused_fallback=None, fused_epochs=epochs, fused_program=run.how,
                       fused_compile_s=round(run.compile_s, 3), fused_train_s=round(seconds, 3))
    if verbose != 0:
        shown = " - ".join(f"{k}: {float(v):.4g}" for k, v in sorted(training_logs.items()))
        print(f"Epoch {epochs}/{epochs} - {shown} (fused: {epochs} epochs in {seconds + run.compile_s:.1f} s)",
              flush=True)
    return model.history


def _prologue(model, kw):
    """Keras' own prologue (``JAXTrainer.fit``), step for step: the same errors, the same draws.  (epochs, the
    epoch iterator, the validation data as (x, y) or None)."""
    from keras.src.backend import config as keras_config
    from keras.src.backend.jax.trainer import JAXEpochIterator
    from keras.src.trainers.data_adapters import array_slicing, data_adapter_utils

    x, y = kw.get("x"), kw.get("y")
    batch_size, epochs = kw.get("batch_size"), kw.get("epochs", 1)
    validation_split, validation_data = kw.get("validation_split", 0.0), kw.get("validation_data")
    shuffle, class_weight = kw.get("shuffle", True), kw.get("class_weight")
    sample_weight = None
    model._assert_compile_called("fit")
    max_epochs = keras_config.max_epochs()
    if max_epochs and max_epochs < epochs:
        warnings.warn("Limiting epochs to %d" % max_epochs)
        epochs = max_epochs
    model._eval_epoch_iterator = None
    if validation_split and validation_data is None:
        (x, y, sample_weight), validation_data = array_slicing.train_validation_split(
            (x, y, sample_weight), validation_split=validation_split)
    validation = None
    if validation_data is not None:
        val_x, val_y, _ = data_adapter_utils.unpack_x_y_sample_weight(validation_data)
        validation = (val_x, val_y)
    epoch_iterator = JAXEpochIterator(x=x, y=y, sample_weight=sample_weight, batch_size=batch_size,
                                      steps_per_epoch=None, shuffle=shuffle, class_weight=class_weight,
                                      steps_per_execution=model.steps_per_execution)
    model._symbolic_build(iterator=epoch_iterator)
    epoch_iterator.reset()
    return epochs, epoch_iterator, validation


def _prepare(model, epoch_iterator, validation, validation_batch_size):
    """Our own work, from the built model to its compiled program: any failure before the first epoch is drawn
    falls back to Keras (which will not draw the build's order again)."""
    try:
        return _prepare_program(model, epoch_iterator, validation, validation_batch_size)
    except _Fallback:
        raise
    except Exception as e:  # our own failure: Keras' fit, which will not draw the build's order again
        raise _Fallback(f"could not be compiled ({type(e).__name__}: {str(e)[:120]})") from None


def _prepare_program(model, epoch_iterator, validation, validation_batch_size):
    import types

    import jax
    from jax import numpy as jnp
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    adapter = epoch_iterator.data_adapter
    if type(adapter) is not ArrayDataAdapter:
        raise _Fallback(f"data of adapter {type(adapter).__name__}")
    _check_model(model)  # again, now that its metrics and loss are built
    n, batch = adapter._num_samples, adapter._batch_size
    if not n:
        raise _Fallback("no training samples")
    data = _device_arrays(adapter)
    if len(data) < 2 or any(not isinstance(a, jax.Array) for a in data):
        raise _Fallback("data that do not convert to dense arrays")
    has_sw = len(data) == 3
    tx, ty = data[0], data[1]
    tsw = data[2] if has_sw else jnp.zeros((n,), jnp.float32)
    vx, vy, n_val, val_batch = _validation_arrays(model, validation, validation_batch_size)
    model.reset_metrics()
    reset = [v.value for v in model.metrics_variables]
    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in model.optimizer.variables], [v.value for v in model.metrics_variables])
    per = chunk_epochs(n)
    perms = jnp.zeros((per, n), jnp.int32)
    active = jnp.zeros((per,), bool)
    args = (state, perms, active, reset, tx, ty, tsw, vx, vy)
    key_parts = (type(model).__name__, n, batch, n_val, val_batch, has_sw, per)
    program, how, compile_s = _compiled(model, key_parts, n, batch, n_val, val_batch, has_sw, args)
    return types.SimpleNamespace(program=program, how=how, compile_s=compile_s, state=state, reset=reset,
                                 data=(tx, ty, tsw, vx, vy), n=n, batch=batch, n_val=n_val, per=per)


def _validation_arrays(model, validation, batch_size):
    """The validation data as device arrays (x, y, their number, their batch size); empty without any."""
    import jax
    from jax import numpy as jnp
    from keras.src.backend.jax.trainer import JAXEpochIterator
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    if validation is None:
        return jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.float32), 0, 1
    val_x, val_y = validation
    val_iterator = JAXEpochIterator(x=val_x, y=val_y, sample_weight=None, batch_size=batch_size,
                                    steps_per_epoch=None, shuffle=False,
                                    steps_per_execution=model.steps_per_execution)
    val_adapter = val_iterator.data_adapter
    if type(val_adapter) is not ArrayDataAdapter:
        raise _Fallback("validation data of another kind")
    vdata = _device_arrays(val_adapter)
    if len(vdata) != 2 or any(not isinstance(a, jax.Array) for a in vdata):
        raise _Fallback("validation data that do not convert to dense arrays")
    return vdata[0], vdata[1], val_adapter._num_samples, val_adapter._batch_size


def _epochs(model, kw, run, epochs, steps, verbose):
    """The epochs, ``run.per`` at a time through the compiled program, with Keras' callbacks and History:
    (the last epoch's logs, the seconds they took)."""
    import jax
    import numpy as np
    from jax import numpy as jnp
    from keras.src import callbacks as callbacks_module

    shuffle = kw.get("shuffle", True)
    user = [cb for cb in (kw.get("callbacks") or []) if type(cb).__name__ == "History"]
    callbacks = callbacks_module.CallbackList(user, add_history=True, add_progbar=False, verbose=verbose,
                                              epochs=epochs, steps=steps, model=model)
    model.stop_training = False
    training_logs = {}
    training_finished = False
    started = time.perf_counter()
    callbacks.on_train_begin()
    state, per, n = run.state, run.per, run.n
    try:
        done = 0
        while done < epochs:
            count = min(per, epochs - done)
            orders = np.zeros((per, n), np.int32)
            orders[:count] = _orders(n, run.batch, count, shuffle)
            on = np.zeros((per,), bool)
            on[:count] = True
            state, outs = run.program(state, jnp.asarray(orders), jnp.asarray(on), run.reset, *run.data)
            model._jax_state = {"trainable_variables": state[0], "non_trainable_variables": state[1],
                                "optimizer_variables": state[2], "metrics_variables": state[3]}
            model._jax_state_synced = False
            outs = jax.device_get(outs)
            for i in range(count):
                epoch = done + i
                callbacks.on_epoch_begin(epoch)
                logs = {k: v[i] for k, v in outs["train"].items()}
                if run.n_val:
                    logs.update({f"val_{k}": v[i] for k, v in outs["val"].items()})
                callbacks.on_epoch_end(epoch, logs)
                training_logs = logs
            done += count
        training_finished = True
    finally:
        model.jax_state_sync()
        if epochs > 0:
            model.optimizer.finalize_variable_values(model.trainable_weights)
        if training_finished:
            callbacks.on_train_end(logs=training_logs)
        model._jax_state = None
    return training_logs, time.perf_counter() - started


def fit(self, *args, **kwargs):
    """``keras.Model.fit``: fused where the call is in the subset (see the module doc), else Keras' own."""
    original = _state["original"] or _keras_fit_of_class()
    last_report.clear()
    try:
        try:
            kw = _arguments(args, kwargs)
            _check_model(self)
            _check_args(kw.get("x"), kw.get("y"), kw)
        except _Fallback:
            raise
        except Exception as e:  # a check that could not even look: Keras decides
            raise _Fallback(f"not checked ({type(e).__name__})") from None
        return _fused(self, kw)
    except _Fallback as why:
        last_report.update(fused=False, fused_fallback=str(why)[:200])
    return original(self, *args, **kwargs)


def _keras_fit_of_class():
    import keras

    return keras.Model.fit


# -- installing ---------------------------------------------------------------------------------------------

def _count_cache_hit(event, **_kw):
    if event == "/jax/compilation_cache/cache_hits":
        _state["cache_events"] += 1


def configure_cache(cache_dir, *, writable: bool) -> bool:
    """Use JAX's persistent compilation cache in ``cache_dir``.  Read-only (``writable=False``, the kernel):
    nothing is ever written (compilations never reach the minimum compile time for a write) and no error
    of the cache is shown.  Must be called before this process compiles anything."""
    try:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(cache_dir))
        _state["store"], _state["store_writable"] = str(cache_dir), writable
        # by default JAX points XLA's GPU autotuning cache into the folder, and that path is part of every
        # entry's key: a cache built at one path would never be found at another (the sandbox's)
        jax.config.update("jax_persistent_cache_enable_xla_caches", "none")
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0 if writable else 1e9)
        if not writable:
            jax.config.update("jax_raise_persistent_cache_errors", False)
            warnings.filterwarnings("ignore", message=r"Error (reading|writing) persistent compilation cache")
        return True
    except Exception:
        return False


#: the cache folder's sub-folder holding matplotlib's font list, as the builder's matplotlib wrote it
FONT_LIST_DIR = "matplotlib"


def use_font_list(cache_dir) -> bool:
    """Give this process's matplotlib the font list the cache's builder made (``cache_dir/matplotlib``), by
    copying it into ``$MPLCONFIGDIR`` unless one is there.  Keras imports ``matplotlib.pyplot``, and a
    matplotlib without its font list lists and opens every font of the system to make one: about a second in
    a fresh sandbox, whose ``$MPLCONFIGDIR`` is always empty.  A list naming a font that is missing here is
    no harm: matplotlib makes a new list when it cannot open the font it chose.  Call it before anything
    imports matplotlib.  Returns whether a list was copied."""
    import os
    import shutil
    from pathlib import Path

    target = os.environ.get("MPLCONFIGDIR")
    if not target or not cache_dir:
        return False
    copied = False
    try:
        for source in sorted((Path(cache_dir) / FONT_LIST_DIR).glob("fontlist-v*.json")):
            dest = Path(target) / source.name
            if source.is_file() and not source.is_symlink() and not dest.exists():
                Path(target).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
                copied = True
    except OSError:
        return False
    return copied


def install(*, cache_dir=None, cache_writable: bool = False, font_list: bool = False) -> bool:
    """Put ``fit`` in place of ``keras.Model.fit`` (once; on a backend other than JAX every call falls back,
    saying so); with ``cache_dir``, JAX's persistent compilation cache there (see ``configure_cache``), and
    with ``font_list`` (a kernel, whose matplotlib has none) matplotlib's font list from it
    (``use_font_list``).  False when Keras cannot be imported, or when ``GRADER_FUSED=0`` turned fused
    training off (nothing changed then)."""
    import os

    if os.environ.get("GRADER_FUSED", "1").strip().lower() in ("0", "off", "no", "false"):
        return False
    if font_list and cache_dir:
        use_font_list(cache_dir)  # before Keras imports matplotlib
    try:
        import keras
    except Exception:
        return False
    if _state["installed"]:
        return True
    if keras.backend.backend() == "jax":
        if cache_dir:
            configure_cache(cache_dir, writable=cache_writable)
        try:
            import jax.monitoring

            if not _state.get("listening"):
                jax.monitoring.register_event_listener(_count_cache_hit)
                _state["listening"] = True
        except Exception:
            pass
    _state["original"] = keras.Model.fit

    @functools.wraps(_state["original"])
    def grader_fused_fit(self, *args, **kwargs):
        return fit(self, *args, **kwargs)

    grader_fused_fit.grader_report = last_report
    keras.Model.fit = grader_fused_fit
    _state["installed"] = True
    return True


def installed() -> bool:
    """Whether ``install`` has put ``fit`` in place (and ``uninstall`` has not put Keras' back)."""
    return _state["installed"]


def uninstall() -> None:
    """Put back what ``install`` replaced (for tests)."""
    import keras

    if _state["installed"]:
        keras.Model.fit = _state["original"]
        _state["installed"] = False
        _state["original"] = None


def keras_fit():
    """Keras' own ``fit`` (what ``install`` replaced; the class's own when not installed)."""
    return _state["original"] or _keras_fit_of_class()
