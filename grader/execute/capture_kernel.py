# Runs inside the student's kernel at start-up (ipykernel exec_files); imports nothing of the grader.
# It wraps keras.Model.fit and keras.Model.predict so that every model a notebook trains (each fit)
# or predicts with (task 1b sets weights by hand and then predicts) is saved, with the training call's
# settings and, when small, its data, into $GRADER_CAPTURE_DIR.  Nothing written here is trusted by
# the grader beyond being a model file to load safely and evaluate: tampering can only lose credit.
# Its helpers are top-level (each step named) and deleted from the namespace once installed; the hooks reach them
# through their closures only, never through globals a notebook could replace.
def _grader_install_capture():
    import os

    out = os.environ.get("GRADER_CAPTURE_DIR")
    # the Keras 2 path (keras2_kernel, GRADER_KERAS2=1): tf_keras's Model is hooked, and its models saved as .h5
    # (the legacy format Keras 3 loads; tf_keras's .keras files are not Keras 3's)
    keras2 = os.environ.get("GRADER_KERAS2") == "1"
    try:
        if keras2:
            import tf_keras as keras
        else:
            import keras
    except Exception:
        return
    if not out:
        return
    os.makedirs(out, exist_ok=True)
    import numpy as np

    max_values = 200_000
    arg = _grader_arg
    capture = _grader_saver(np, out, keras2, max_values)
    describe_training = _grader_describer(np, keras, keras2)
    weights_of, change = _grader_weight_change(np, max_values)
    hook = _grader_hook
    hook(keras.Model, capture, describe_training, weights_of, change, arg)
    if keras2:  # without eager execution (tf.compat.v1), tf_keras's models are graph mode's, of training_v1
        try:
            from tf_keras.src.engine import training_v1

            hook(training_v1.Model, capture, describe_training, weights_of, change, arg)
        except Exception:
            pass


def _grader_hook(model_class, capture, describe_training, weights_of, change, arg):
    """Wrap ``model_class.fit``, ``.predict`` and ``.evaluate`` so that each call saves its model (``capture``)."""
    import functools

    original_fit = model_class.fit
    original_predict = model_class.predict
    original_evaluate = model_class.evaluate
    fitting = []  # the fits under way: Keras' fit validates by calling evaluate, which is no use of its own

    def how_trained():
        """Whether the fit just done was fused into compiled programs (the fused fit installed beneath this
        hook says so after each call), and if not, why."""
        report = getattr(original_fit, "grader_report", None)
        if not isinstance(report, dict) or "fused" not in report:
            return {"fused": False, "fused_fallback": "Keras' own fit (no fused fit installed)"}
        return {"fused": bool(report.get("fused")), "fused_fallback": report.get("fused_fallback"),
                "fused_program": report.get("fused_program")}

    @functools.wraps(original_fit)
    def fit(self, *args, **kwargs):
        before = weights_of(self)
        fitting.append(self)
        try:
            history = original_fit(self, *args, **kwargs)
        finally:
            fitting.pop()
        try:
            settings = describe_training(self, args, kwargs)
            ran = getattr(history, "epoch", None)
            if getattr(self, "stop_training", False) and isinstance(ran, list) and ran and isinstance(ran[-1], int):
                settings["epochs"] = ran[-1] + 1  # a callback stopped it (EarlyStopping): the epochs it ran
            settings["weight_change"] = change(before, self)
            settings.update(how_trained())
            capture(self, "fit", arg(args, kwargs, 0, "x"), arg(args, kwargs, 1, "y"), settings)
        except Exception:
            pass
        return history

    @functools.wraps(original_predict)
    def predict(self, *args, **kwargs):
        result = original_predict(self, *args, **kwargs)
        try:
            capture(self, "predict", arg(args, kwargs, 0, "x"), None, {})
        except Exception:
            pass
        return result

    @functools.wraps(original_evaluate)
    def evaluate(self, *args, **kwargs):
        """A model used as predict uses it (1b's hand-set weights checked by their loss, never predicted)."""
        result = original_evaluate(self, *args, **kwargs)
        if not fitting:
            try:
                capture(self, "predict", arg(args, kwargs, 0, "x"), None, {"call": "evaluate"})
            except Exception:
                pass
        return result

    model_class.fit = fit
    model_class.predict = predict
    model_class.evaluate = evaluate


def _grader_arg(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _grader_dataset_arrays(np, data, max_values):
    """(x, y) of a finite ``tf.data.Dataset`` of (features, labels) that a fit was given (TensorFlow's
    tutorials: ``from_tensor_slices((X, Y)).shuffle(200).batch(32)``), read once through, within
    ``max_values``; None for anything else (a recipe is then re-trained on nothing, and not at all)."""
    try:
        if not (hasattr(data, "as_numpy_iterator") and hasattr(data, "element_spec")):
            return None
        spec = data.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2) or int(data.cardinality()) < 0:
            return None  # not (x, y) pairs; infinite (repeat()) or of unknown size
        xs, ys, count = [], [], 0  # batches (a fit takes no other dataset)
        for a, b in data.as_numpy_iterator():
            count += np.size(a) + np.size(b)
            if count > max_values:
                return None
            xs.append(np.asarray(a))
            ys.append(np.asarray(b))
        return (np.concatenate(xs), np.concatenate(ys)) if xs else None
    except Exception:
        return None


def _grader_layers_of(model, xa, keras2):
    """A model of the student's own class (``class Net(keras.Model)`` with ``call``), which the grader does not
    load (its code is the notebook's): the Functional model of the layers its ``call`` runs on an input of the
    data's shape, sharing their weights; None when ``call`` runs anything but layers."""
    try:
        if keras2:
            import tf_keras as keras
        else:
            import keras
        if xa is None or xa.ndim < 2:
            return None
        inputs = keras.Input(shape=xa.shape[1:])
        return keras.Model(inputs, model.call(inputs))
    except Exception:
        return None


def _grader_saver(np, out, keras2, max_values):
    """``capture(model, event, x, y, settings)``: save the model, its settings and (when small) its data."""
    import hashlib
    import json
    import os

    state = {"count": 0, "last": {}}
    max_captures = 200

    def weights_digest(model):
        h = hashlib.sha256()
        for w in model.get_weights():
            h.update(np.ascontiguousarray(w).tobytes())
        return h.hexdigest()

    def as_array(v):
        try:
            a = np.asarray(v)
            return a if a.dtype != object else None
        except Exception:
            return None

    dataset_arrays, layers_of = _grader_dataset_arrays, _grader_layers_of

    def capture(model, event, x, y, settings):
        if state["count"] >= max_captures:
            return
        digest = weights_digest(model)
        key = id(model)
        if state["last"].get(key) == digest:
            return  # nothing changed since this model was last captured
        state["last"][key] = digest
        n = state["count"] = state["count"] + 1
        stem = os.path.join(out, f"capture-{n:03d}")
        model_file = stem + (".h5" if keras2 else ".keras")
        pairs = dataset_arrays(np, x, max_values) if y is None and event == "fit" else None
        xa, ya = pairs if pairs is not None else (as_array(x), as_array(y))
        subclass = None if type(model).__module__.startswith(("keras.", "tf_keras.", "tensorflow.")) \
            else type(model).__name__
        traced = layers_of(model, xa, keras2) if subclass else None
        saved = model if traced is None else traced
        if keras2:
            import warnings

            with warnings.catch_warnings():  # tf_keras calls HDF5 "legacy": not the student's concern
                warnings.simplefilter("ignore")
                saved.save(model_file, include_optimizer=False)
        else:
            saved.save(model_file)
        meta = {"index": n, "event": event, "model_file": model_file,
                "weights_sha256": digest, **settings}
        if subclass:
            meta["subclass"] = subclass[:100]
            meta["subclass_traced"] = traced is not None
        if xa is not None:
            meta["x_shape"] = list(xa.shape)
            meta["x_sha256"] = hashlib.sha256(np.ascontiguousarray(xa).tobytes()).hexdigest()
            if xa.size <= max_values and (ya is None or ya.size <= max_values):
                arrays = {"x": xa.astype(np.float64)}
                if ya is not None:
                    arrays["y"] = ya.astype(np.float64)
                np.savez(stem + ".npz", **arrays)
                meta["data_file"] = stem + ".npz"
        with open(stem + ".json", "w") as f:
            json.dump(meta, f)

    return capture


def _grader_describer(np, keras, keras2):
    """``describe_training(model, args, kwargs)``: the recipe of a fit."""
    arg = _grader_arg

    def plain(value, depth=0):
        """A JSON-able copy of an optimizer or loss config (numbers, strings, small lists and dicts)."""
        if isinstance(value, (bool, int, float, str)) or value is None:
            return value
        if depth < 4 and isinstance(value, dict):
            return {str(k): plain(v, depth + 1) for k, v in list(value.items())[:50]}
        if depth < 4 and isinstance(value, (list, tuple)):
            return [plain(v, depth + 1) for v in list(value)[:50]]
        try:
            return float(np.asarray(value))
        except Exception:
            return str(value)[:100]

    keras3_terms = _grader_keras3_terms

    def describe_training(model, args, kwargs):
        """The recipe of a fit: optimizer and its configuration, loss, epochs, batch size, shuffling."""
        opt = getattr(model, "optimizer", None)
        loss = getattr(model, "loss", None)
        lr = opt_config = loss_config = None
        try:
            lr = float(np.asarray(opt.learning_rate))
        except Exception:
            pass
        try:
            opt_config = plain(keras.optimizers.serialize(opt))
        except Exception:
            pass
        try:
            loss_config = loss if isinstance(loss, str) else plain(keras.losses.serialize(loss))
        except Exception:
            pass
        if keras2:
            opt_config, loss_config = keras3_terms(opt_config, loss_config)
        epochs = arg(args, kwargs, 3, "epochs", kwargs.get("nb_epoch", 1))  # Keras 1's nb_epoch, run by Keras 2
        return {"epochs": epochs, "batch_size": arg(args, kwargs, 2, "batch_size"),
                "validation_split": arg(args, kwargs, 6, "validation_split", 0.0),
                "shuffle": bool(arg(args, kwargs, 8, "shuffle", True)),
                "loss": loss if isinstance(loss, str) else type(loss).__name__ if loss is not None else None,
                "optimizer": type(opt).__name__ if opt is not None else None, "learning_rate": lr,
                "optimizer_config": opt_config, "loss_config": loss_config}

    return describe_training


def _grader_keras3_terms(opt_config, loss_config):
    """tf_keras's optimizer and loss configs in Keras 3's terms, the recipe a re-training reads: Keras 2's own
    settings dropped (jit_compile, is_legacy_optimizer, a legacy optimizer's zero decay, a loss's fn), its
    "auto" reduction Keras 3's sum_over_batch_size.  A legacy optimizer's non-zero decay stays legacy (no
    Keras 3 optimizer has it: the recipe is not re-trained)."""
    if isinstance(opt_config, dict) and isinstance(opt_config.get("config"), dict):
        cfg = {k: v for k, v in opt_config["config"].items() if k not in ("jit_compile", "is_legacy_optimizer")}
        module = opt_config.get("module")
        if module == "keras.optimizers.legacy" and not cfg.get("decay"):
            cfg.pop("decay", None)
            module = "keras.optimizers"
        opt_config = {**opt_config, "module": module, "config": cfg}
    if isinstance(loss_config, dict) and isinstance(loss_config.get("config"), dict):
        cfg = {k: v for k, v in loss_config["config"].items() if k != "fn"}
        if cfg.get("reduction") == "auto":
            cfg["reduction"] = "sum_over_batch_size"
        loss_config = {**loss_config, "config": cfg}
    return opt_config, loss_config


def _grader_weight_change(np, max_values):
    """(``weights_of(model)``, ``change(before, model)``): how far a fit moved a model's weights."""

    def weights_of(model):
        try:
            weights = model.get_weights()
        except Exception:
            return None
        if not weights or sum(w.size for w in weights) > max_values * 10:
            return None  # not built yet (fit will initialise it), or too large to keep a copy of
        return [np.array(w, dtype=np.float64) for w in weights]

    def change(before, model):
        """How far fit moved the weights: |after - before| / |before| (None when unknown)."""
        if before is None:
            return None
        after = [np.asarray(w, dtype=np.float64) for w in model.get_weights()]
        if len(after) != len(before):
            return None
        moved = sum(float(np.sum((a - b) ** 2)) for a, b in zip(after, before))
        size = sum(float(np.sum(b ** 2)) for b in before)
        return float(np.sqrt(moved) / max(np.sqrt(size), 1e-12))

    return weights_of, change


_grader_install_capture()
del _grader_install_capture, _grader_arg, _grader_dataset_arrays, _grader_layers_of, _grader_saver, _grader_describer
del _grader_keras3_terms, _grader_weight_change, _grader_hook
