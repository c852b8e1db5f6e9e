"""The one module that loads Keras models.

Every model file passes, in order: ``read_config`` (its JSON config read without Keras: allow-listed layer
classes only, a parameter and layer budget), ``load`` (``load_model(safe_mode=True, compile=False)``, no
custom objects; ``BuiltModels`` reuses a model of the same configuration), ``describe`` (the architecture as
plain data) and ``predict`` (the model called directly, in batches).  Only the evaluation worker imports it.
Why each step: docs/design/evaluate.md.
"""
from __future__ import annotations

import io
import itertools
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from .errors import CorruptModel, ModelLoadError, ModelTooLarge, UnknownFormat, UnsafeModel
from .intake.formats import FORMAT_NAMES, HDF5, KERAS_ZIP, SAVEDMODEL
from .records import ModelInfo

#: the largest model configuration (JSON) read
MAX_CONFIG_BYTES = 16 * 2**20
#: layer classes a graded model may contain; anything else is refused before loading
ALLOWED_LAYERS = {
    "InputLayer", "Dense", "Activation", "Dropout", "Flatten", "BatchNormalization",
    "LayerNormalization", "Normalization", "Rescaling", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "ReLU", "Softmax", "LeakyReLU", "ELU", "PReLU",
}
ALLOWED_MODELS = {"Sequential", "Functional", "Model"}
#: what a layer's (or a model's) configuration may hold as a Keras object of its own, ``{"class_name": ...}``:
#: the allowed layers' initializers, regularizers, constraints and dtype policies, a functional model's tensors,
#: arrays.  Keras builds whatever such an entry names (any class or function Keras exports), in safe mode too: a
#: Lambda layer or a nested model given as a Dense layer's activation, or an exported Keras function called on
#: the held-out data with the file's arguments (``keras.visualization.plot_image_gallery`` writing a PNG at a
#: path of the file's choosing), passed an allow-list of layers that looked only at the layers themselves
ALLOWED_OBJECTS = {
    "Constant", "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "Identity", "IdentityInitializer",
    "LecunNormal", "LecunUniform", "Ones", "Orthogonal", "OrthogonalInitializer", "RandomNormal", "RandomUniform",
    "TruncatedNormal", "VarianceScaling", "Zeros",
    "L1", "L2", "L1L2", "OrthogonalRegularizer",
    "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "RadialConstraint",
    "DTypePolicy", "FloatDTypePolicy", "Policy",
    "__keras_tensor__", "__numpy__", "__tensor__",
}
#: the modules such an object may name (tf_keras names none)
OBJECT_MODULES = {None, "keras", "keras.initializers", "keras.regularizers", "keras.constraints",
                  "keras.dtype_policies", "keras.mixed_precision", "keras.activations", "builtins"}
#: Keras' own activations, the only functions a configuration may name (as ``"relu"`` or as a function object)
ACTIVATIONS = {
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu", "hard_swish",
    "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish", "relu", "relu6", "selu", "sigmoid",
    "silu", "soft_shrink", "softmax", "softplus", "softsign", "sparse_plus", "sparse_sigmoid", "sparsemax",
    "squareplus", "swish", "tanh", "tanh_shrink", "threshold",
}
#: the functions of ``keras.layers``, which Keras' HDF5 loader puts in place of any string of a layer's
#: configuration that names one
_LAYER_FUNCTIONS = {"Input", "add", "average", "concatenate", "deserialize", "dot", "maximum", "minimum",
                    "multiply", "serialize", "subtract"}
#: activation layers and the activation each applies: after a linear Dense layer, the pair reads as that Dense
#: with the activation (Dense(4) + ReLU() is Dense(4, relu)); anywhere else it is an extra layer
_ACTIVATION_LAYERS = {"ReLU": "relu", "Softmax": "softmax", "LeakyReLU": "leaky_relu", "ELU": "elu",
                      "PReLU": "prelu"}


def _iter_layers(config):
    """Yield every layer config in a (possibly nested) model config."""
    for layer in config.get("config", {}).get("layers", []) or []:
        yield layer
        if layer.get("class_name") in ALLOWED_MODELS:
            yield from _iter_layers(layer)


def _config_problems(config, max_parameters: int, source: str, max_layers: int = 100):
    if not isinstance(config, dict) or "class_name" not in config:
        raise CorruptModel(f"{source}: the model configuration is missing or unreadable.")
    if config["class_name"] not in ALLOWED_MODELS:
        raise UnsafeModel(f"{source}: the top-level object is a {config['class_name']!r}, not a Keras model "
                          f"the grader loads (Sequential or Functional).")
    width = None
    total = 0
    layers = list(itertools.islice(_iter_layers(config), max_layers + 1))
    if len(layers) > max_layers:
        raise ModelTooLarge(f"{source}: the model has more than {max_layers} layers; no task needs anything near "
                            "that, so the grader refuses to build it.")
    _object_problems(config, source)
    for layer in layers:
        cls = layer.get("class_name")
        cfg = layer.get("config", {}) or {}
        if cls in ALLOWED_MODELS:
            _object_problems(layer, source)
            continue
        if cls == "Lambda":
            raise UnsafeModel(
                f"{source}: the model contains a Lambda layer ({cfg.get('name', '?')}). A Lambda layer stores "
                "Python code, which the grader never runs.",
                hint="Use only standard layers (Dense, Activation, Dropout) in the model you submit.")
        if cls not in ALLOWED_LAYERS:
            raise UnsafeModel(
                f"{source}: the model contains a layer of class {cls!r}, which the grader does not load "
                "(custom or unusual layers can run code when loaded).",
                hint="Use only standard layers (Dense, Activation, Dropout) in the model you submit.")
        _object_problems(layer, source)
        shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
        if shape:
            width = shape[-1]
        if cls == "Dense":
            units = cfg.get("units")
            if not isinstance(units, int) or units <= 0:
                raise CorruptModel(f"{source}: Dense layer {cfg.get('name', '?')} has units={units!r}.")
            if width is None or not isinstance(width, int):
                width = 1
            total += (width + 1) * units
            if total > max_parameters:
                raise ModelTooLarge(
                    f"{source}: Dense layer {cfg.get('name', '?')} claims {units:,} units, which makes the "
                    f"model larger than {max_parameters:,} parameters; no task needs anything near that, so "
                    "the grader refuses to build it.")
            width = units
    return total


def _object_problems(entry: dict, source: str) -> None:
    """Refuse (``UnsafeModel``) a Keras object in a layer's or a model's ``entry`` (``{"class_name", "config",
    ...}``; a model's layers are vetted as layers, on their own) that is not one of ``ALLOWED_OBJECTS`` from
    ``OBJECT_MODULES``, a function that is not one of Keras' ``ACTIVATIONS``, or a string of the layer's
    configuration that Keras' HDF5 loader would take for a function of ``keras.layers``.  Everything of the entry
    is walked (a functional model's ``inbound_nodes`` are built by Keras too), without recursion (a
    configuration is up to 16 MB of JSON)."""
    model = entry.get("class_name") in ALLOWED_MODELS
    config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    where = (f"the model {config.get('name', '?')!s:.80}" if model else f"layer {config.get('name', '?')!s:.80}")
    # (key, value, whether the value is an item of the layer's configuration itself)
    # (a .keras file's compile_config is never read: models are loaded with compile=False)
    stack = [(k, v, False) for k, v in entry.items()
             if k not in ("class_name", "module", "registered_name", "config", "compile_config")]
    stack += [(k, v, not model) for k, v in config.items() if not (model and k == "layers")]

    def refuse(what: str) -> UnsafeModel:
        return UnsafeModel(f"{source}: {where} holds {what}, which the grader does not load (a model's "
                           "configuration can make Keras build and run other objects and functions than its "
                           "layers).", hint="Use only standard layers (Dense, Activation, Dropout) with Keras' own "
                                            "activations, initializers and regularizers in the model you submit.")

    while stack:
        key, value, direct = stack.pop()
        if isinstance(value, list):
            stack.extend((key, v, False) for v in value)
        elif isinstance(value, str) and direct:
            if key != "name" and value in _LAYER_FUNCTIONS:
                raise refuse(f"the name of the Keras function {value!r} as its {key!r}")
            if key == "activation" and value not in ACTIVATIONS:
                raise refuse(f"the activation {value[:80]!r}, not one of Keras' own")
        elif isinstance(value, dict):
            if "class_name" in value or "__passive_serialization__" in value:
                cls, module = value.get("class_name"), value.get("module")
                if cls == "function":
                    name = value.get("config")
                    if not isinstance(name, str) or name not in ACTIVATIONS or module not in OBJECT_MODULES:
                        raise refuse(f"the function {str(name)[:80]!r} of module {str(module)[:80]!r} as its "
                                     f"{key!r} (only Keras' own activations are taken)")
                elif cls in _ACTIVATION_LAYERS and module in (None, "keras.layers") and \
                        value.get("registered_name") in (None, cls):
                    pass  # Dense(4, activation=LeakyReLU()): an allowed layer, as the activation
                elif cls not in ALLOWED_OBJECTS or module not in OBJECT_MODULES or \
                        value.get("registered_name") not in (None, cls):
                    raise refuse(f"a Keras object of class {str(cls)[:80]!r} (module {str(module)[:80]!r}) as its "
                                 f"{key!r}")
            stack.extend((k, v, False) for k, v in value.items())


def _no_model_config(name: str, f) -> CorruptModel:
    """The error for an HDF5 file without a model configuration: weights alone (``save_weights``: Keras 2's
    ``layer_names``, Keras 3's ``layers``/``vars``), or a file that a ``model.save`` which failed left behind
    (Keras writes the configuration first: without it, nothing of the model was written)."""
    keys = set(list(f.keys())[:20])
    if "layer_names" in f.attrs or keys & {"layers", "vars"}:
        return CorruptModel(f"{name}: this HDF5 file holds weights only, no model (it was saved with "
                            "model.save_weights instead of model.save).",
                            hint="Save the whole model with model.save('model.h5').")
    what = "empty" if not keys and not len(f.attrs) else "incomplete"
    return CorruptModel(f"{name}: this HDF5 file is {what}: the model.save that wrote it failed before it wrote the "
                        "model, and left the file broken (look for the cell or line where saving raised an error).",
                        hint="Fix what made model.save fail, save the model again with model.save('model.h5'), "
                             "and check that the file loads (keras.models.load_model('model.h5')).")


#: the members of a .keras archive (Keras 3 and tf_keras write these three, and folders)
KERAS_MEMBERS = {"config.json", "metadata.json", "model.weights.h5", "model.weights.npz"}


def _archive_problems(z: zipfile.ZipFile, name: str, max_parameters: int) -> None:
    """Refuse a .keras archive with members a model of ``max_parameters`` does not have, or more bytes than such a
    model's: Keras' loader extracts every member of an archive of more than three to disk (only each member's
    expansion ratio is checked, and only above 256 MiB), so a 300 KB file wrote 300 MB to the worker's /tmp."""
    members = [i for i in z.infolist() if not i.is_dir()]
    extra = [i.filename for i in members if i.filename not in KERAS_MEMBERS]
    if extra:
        raise CorruptModel(f"{name}: the archive holds files a Keras model does not have "
                           f"({', '.join(repr(e[:60]) for e in extra[:3])}{', ...' if len(extra) > 3 else ''}).",
                           hint="Save the model with model.save('model.keras') and hand in that file as it is.")
    most = 2 * MAX_CONFIG_BYTES + 8 * max_parameters + 2**20  # configuration, metadata, float64 weights, HDF5's own
    if sum(i.file_size for i in members) > most:
        raise CorruptModel(f"{name}: the archive unpacks to more than {most // 2**20} MB, more than a model of at "
                           f"most {max_parameters:,} parameters needs.",
                           hint="Save the model with model.save('model.keras') and hand in that file as it is.")


#: HDF5 objects (groups and arrays) a model's file may hold per layer the config allows: a layer's weights, its
#: optimizer's, their groups; a file of more is no model's
H5_OBJECTS_PER_LAYER = 50


def _stored_weights_problems(f, name: str, max_parameters: int, max_layers: int) -> None:
    """Refuse an HDF5 file (a ``.h5`` model, or a ``.keras`` archive's weights) whose arrays declare more values
    than a model of ``max_parameters`` and its optimizer's slots hold, that holds more objects than its layers
    could, or that holds a link: a 17 KB file declared an unallocated array (HDF5's fill value) of 800 million
    floats, which Keras' loader read whole (3 GB, up to the worker's memory cap) before comparing it with its layer,
    and the student was told to check the number of units; Keras refuses a link itself, in words of its own.
    Only headers are read."""
    import h5py

    most_objects, most_values = H5_OBJECTS_PER_LAYER * max_layers + 100, 4 * max_parameters + 10_000
    state = {"objects": 0, "values": 0, "problem": None}

    def visit(key, link):
        state["objects"] += 1
        if state["objects"] > most_objects:
            state["problem"] = f"holds more than {most_objects:,} objects, more than a model of {max_layers} layers"
        elif not isinstance(link, h5py.HardLink):
            state["problem"] = f"holds a link ({key[:60]!r}), which a saved model never has"
        else:
            obj = f.get(key, getlink=False)
            if isinstance(obj, h5py.Dataset):
                state["values"] += int(np.prod([int(d) for d in obj.shape or ()], dtype=object))
                if state["values"] > most_values:
                    state["problem"] = (f"declares arrays of more than {most_values:,} values, more than a model of "
                                        f"at most {max_parameters:,} parameters stores")
        return True if state["problem"] else None  # stops the walk

    f.visititems_links(visit)
    if state["problem"]:
        raise CorruptModel(f"{name}: the file {state['problem']}.",
                           hint="Save the model with model.save() and hand in that file as it is.")


def read_config(path: Path, fmt: str, max_parameters: int, max_layers: int = 100) -> dict:
    """Read and vet the model's config without Keras. Raises a ``SubmissionError``."""
    path = Path(path)
    name = path.name
    if fmt == HDF5:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
                if raw is None:
                    raise _no_model_config(name, f)
                raw = raw.decode() if isinstance(raw, bytes) else raw
                if len(raw) > MAX_CONFIG_BYTES:
                    raise CorruptModel(f"{name}: its model configuration is larger than "
                                       f"{MAX_CONFIG_BYTES // 2**20} MB; a model of this course's size needs a few KB.")
                version = f.attrs.get("keras_version")
                _stored_weights_problems(f, name, max_parameters, max_layers)
        except (OSError, RuntimeError, ValueError) as e:
            _log_detail(name, e)  # the reader's own words (HDF5's internals) are for the TA's log, not the pages
            raise CorruptModel(
                f"{name}: the file is truncated or not an HDF5 Keras file: it starts like an HDF5 file but cannot "
                "be opened.", hint="Save the model again with model.save('model.h5') and re-upload the file.") from None
    elif fmt == KERAS_ZIP:
        try:
            with zipfile.ZipFile(path) as z:
                if z.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
                    raise CorruptModel(f"{name}: its config.json claims more than {MAX_CONFIG_BYTES // 2**20} MB; "
                                       "a model of this course's size needs a few KB.")
                _archive_problems(z, name, max_parameters)
                if "model.weights.h5" in z.namelist():  # its size bounded by ``_archive_problems``
                    import h5py

                    with h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as weights:
                        _stored_weights_problems(weights, name, max_parameters, max_layers)
                raw = z.read("config.json").decode()
                meta = json.loads(z.read("metadata.json")) if "metadata.json" in z.namelist() else {}
                version = meta.get("keras_version")
        except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError, ValueError) as e:
            _log_detail(name, e)
            raise CorruptModel(f"{name}: the file is truncated or not a .keras model archive: it starts like a zip "
                               "archive but its model cannot be read.",
                               hint="Save the model again and re-upload the file.") from None
    elif fmt == SAVEDMODEL:
        raise saved_model_refusal(name)
    else:
        raise UnknownFormat(f"{name}: {FORMAT_NAMES.get(fmt, fmt)}, not a Keras model.")
    try:
        config = json.loads(raw)
    except ValueError:
        raise CorruptModel(f"{name}: the model configuration inside the file is not valid JSON.") from None
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    if isinstance(config, dict) and isinstance(config.get("config"), list) and \
            config.get("class_name") != "Sequential":
        raise _list_of_layers(name, version)
    if _needs_current_form(config):  # Keras <= 2.3's Sequential, read as TensorFlow 2.x's Keras writes it
        config = _current_form(config)
        raw = json.dumps(config)
    if (tf_functions := _tf_activations(config)) is not None:  # activation=tf.nn.softmax, as Keras' softmax
        config = tf_functions
        raw = json.dumps(config)
    _config_problems(config, max_parameters, name, max_layers)
    return {"config": config, "config_text": raw, "keras_version": version}


def _current_form(config: dict) -> dict:
    """A ``Sequential``'s configuration as Keras up to 2.1 wrote it (its layers as a bare list), in the form
    TensorFlow 2.x's Keras writes: ``{"name": ..., "layers": [...]}``, an ``InputLayer`` first with the first
    layer's ``batch_input_shape`` (Keras 3 rebuilds a first ``Dense`` that carries it alone with an extra axis)."""
    inner = config["config"]
    layers = list(inner if isinstance(inner, list) else inner.get("layers") or [])
    first = layers[0].get("config") if layers and isinstance(layers[0], dict) else None
    if (isinstance(first, dict) and layers[0].get("class_name") != "InputLayer"
            and isinstance(first.get("batch_input_shape"), list)):
        layers.insert(0, {"class_name": "InputLayer", "config": {
            "batch_input_shape": first["batch_input_shape"], "dtype": first.get("dtype", "float32"),
            "sparse": False, "ragged": False, "name": "input"}})
    if isinstance(inner, dict):
        return {**config, "config": {**inner, "layers": layers}}
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}


def _needs_current_form(config) -> bool:
    """A ``Sequential`` configuration that Keras 3 does not rebuild as written: Keras <= 2.1's list of layers,
    or Keras 2.2-2.3's first layer carrying the input's ``batch_input_shape`` without an ``InputLayer``."""
    if not isinstance(config, dict) or config.get("class_name") != "Sequential":
        return False
    inner = config.get("config")
    if isinstance(inner, list):
        return True
    layers = inner.get("layers") if isinstance(inner, dict) else None
    return (isinstance(layers, list) and bool(layers) and isinstance(layers[0], dict)
            and layers[0].get("class_name") != "InputLayer" and isinstance(layers[0].get("config"), dict)
            and isinstance(layers[0]["config"].get("batch_input_shape"), list))


#: TensorFlow's functions that Keras 3 saves as a "function" of module ``builtins`` (``activation=tf.nn.softmax``,
#: TensorFlow's tutorials' spelling: its name is ``softmax_v2``), which no Keras loads back, and the Keras
#: activation each one computes (the same function: softmax over the last axis, x * sigmoid(x), ...)
TF_FUNCTIONS = {"softmax_v2": "softmax", "log_softmax_v2": "log_softmax", "swish": "swish", "silu": "silu",
                "gelu": "gelu", "relu6": "relu6"}


def _tf_activations(config) -> dict | None:
    """``config`` with each layer's ``activation`` that is one of ``TF_FUNCTIONS`` as the Keras activation it
    computes; None when it has none."""
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        return None
    layers = config["config"].get("layers")
    if not isinstance(layers, list):
        return None
    changed, fixed = False, []
    for layer in layers:
        layer_config = layer.get("config") if isinstance(layer, dict) else None
        activation = layer_config.get("activation") if isinstance(layer_config, dict) else None
        if isinstance(layer, dict) and layer.get("class_name") in ALLOWED_MODELS:
            inner = _tf_activations(layer)
            if inner is not None:
                layer, changed = inner, True
        elif (isinstance(activation, dict) and activation.get("class_name") == "function"
              and activation.get("module") == "builtins" and activation.get("config") in TF_FUNCTIONS):
            layer = {**layer, "config": {**layer_config, "activation": TF_FUNCTIONS[activation["config"]]}}
            changed = True
        fixed.append(layer)
    return {**config, "config": {**config["config"], "layers": fixed}} if changed else None


def _listed_sequential(path: Path) -> dict | None:
    """The configuration of an HDF5 ``Sequential`` that Keras up to 2.3 saved (``_needs_current_form``), or of a
    model with TensorFlow's functions as activations (``_tf_activations``), in the form Keras 3 rebuilds; None
    for any other file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            raw = raw.decode() if isinstance(raw, bytes) else raw
            if not isinstance(raw, str) or len(raw) > MAX_CONFIG_BYTES or not (
                    "batch_input_shape" in raw or "builtins" in raw):
                return None
        config = json.loads(raw)
    except (OSError, RuntimeError, ValueError, RecursionError):
        return None
    current = _current_form(config) if _needs_current_form(config) else None
    return _tf_activations(current or config) or current


def _keras2_archive_form(config) -> dict | None:
    """The configuration of a ``.keras`` archive that Keras 2.13-2.15 or tf_keras wrote (``model.save('x.keras')``
    on TensorFlow 2.13-2.15, Colab's until 2024), in the form Keras 3 rebuilds: the input's shape as an
    ``InputLayer``'s ``batch_shape`` and on no other layer (Keras 3 refuses a ``Dense`` that carries Keras 2's
    ``batch_input_shape``: "could not be deserialized properly"), a ``Functional`` of Keras 3's module.  The
    weights file is the same format in both.  None for any other configuration."""
    if not isinstance(config, dict) or config.get("class_name") not in ("Sequential", "Functional"):
        return None
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) and isinstance(layer.get("config"), dict)
                                               for layer in layers):
        return None
    module = str(config.get("module") or "")
    if not (any("batch_input_shape" in layer["config"] for layer in layers)
            or module.startswith(("tf_keras.", "keras.src.engine."))):
        return None
    fixed = []
    for layer in layers:
        layer_config = dict(layer["config"])
        shape = layer_config.pop("batch_input_shape", None)
        if layer.get("class_name") == "InputLayer" and shape is not None:
            layer_config["batch_shape"] = shape
            layer_config.pop("ragged", None)
        fixed.append({**layer, "config": layer_config})
    out = {**config, "config": {**inner, "layers": fixed}}
    if config["class_name"] == "Functional":
        out["module"] = "keras.src.models.functional"
    return out


def _keras2_archive(path: Path, tmp: Path) -> Path | None:
    """A copy in ``tmp`` of the vetted ``.keras`` archive ``path`` with its configuration in the form Keras 3
    rebuilds (``_keras2_archive_form``, ``_tf_activations``); None when it needs none or is not such an archive."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = [i for i in z.infolist() if not i.is_dir()]
            if ({i.filename for i in infos} - KERAS_MEMBERS or "config.json" not in z.namelist()
                    or z.getinfo("config.json").file_size > MAX_CONFIG_BYTES):
                return None
            config = json.loads(z.read("config.json"))
            keras2 = _keras2_archive_form(config)
            fixed = _tf_activations(keras2 or config) or keras2
            if fixed is None:
                return None
            copy = tmp / "model.keras"
            with zipfile.ZipFile(copy, "w") as out:
                for info in infos:  # sizes bounded by read_config (``_archive_problems``)
                    data = json.dumps(fixed).encode() if info.filename == "config.json" else z.read(info.filename)
                    out.writestr(info.filename, data)
            return copy
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def _list_of_layers(name: str, version) -> CorruptModel:
    """The error for a model saved by Keras up to 2.1 (or Keras 1), which wrote a ``Sequential``'s configuration
    as a bare list of layers: no Keras of today rebuilds a model from it."""
    by = (f"Keras {version}" if isinstance(version, str) and re.fullmatch(r"[0-9][\w.+-]{0,19}", version)
          else "a Keras older than 2.2")  # the file's own words: a version number only
    return CorruptModel(f"{name}: saved by {by}, which wrote the model's configuration as a bare list of layers "
                        "(Keras up to 2.1 did); current Keras cannot rebuild a model from that.",
                        hint="Load it with the Keras you trained it with and save it again with a newer one "
                             "(TensorFlow 2.x: model.save('model.h5')), or hand in the notebook that trains it: the "
                             "grader runs it and grades the models it trains.")


def saved_model_refusal(name: str) -> ModelLoadError:
    """Why a TensorFlow SavedModel folder is not graded, and what to submit instead."""
    return ModelLoadError(
        f"{name}: this is a TensorFlow SavedModel folder, which Keras 3 does not load as a model.",
        hint="Save the model with model.save('model.h5') (or a .keras file) and submit that file.")


def _log_detail(name: str, e: BaseException) -> None:
    """Keep what a file-format reader said about a file it could not open in the batch's log (``logs``: a
    worker's standard error is the log in a batch); a student's own ``check`` keeps it off their terminal."""
    import logging
    import os

    from .logs import LOG_ENV

    if os.environ.get(LOG_ENV):
        logging.getLogger("grader.keras_io").warning("%s could not be opened: %s: %s", name, type(e).__name__,
                                                     _short(e, 1000))


def _short(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load(path: Path):
    """Load a vetted model file with Keras' safe mode and no compilation."""
    import keras

    path = Path(path)
    try:
        from .intake.formats import sniff_format

        fmt = sniff_format(path)  # read once: the file's format decides each copy below
        listed = _listed_sequential(path) if fmt == HDF5 else None
        if listed is not None:  # saved by Keras <= 2.3 or with tf.nn activations: a copy Keras rebuilds
            import shutil
            import tempfile

            import h5py

            with tempfile.TemporaryDirectory(prefix="grader-load-") as tmp:
                copy = Path(tmp) / "model.h5"
                shutil.copyfile(path, copy)
                with h5py.File(copy, "r+") as f:
                    f.attrs["model_config"] = json.dumps(listed)
                return keras.models.load_model(copy, compile=False, safe_mode=True)
        if fmt == KERAS_ZIP:  # saved by Keras 2.13-2.15 or with tf.nn activations: a copy Keras 3
            #                                   rebuilds
            import tempfile

            with tempfile.TemporaryDirectory(prefix="grader-load-") as tmp:
                copy = _keras2_archive(path, Path(tmp))
                if copy is not None:
                    return keras.models.load_model(copy, compile=False, safe_mode=True)
        if path.suffix not in (".h5", ".keras"):  # Keras goes by the extension: model.H5, model.hdf5
            import tempfile

            with tempfile.TemporaryDirectory(prefix="grader-load-") as tmp:
                alias = Path(tmp) / ("model.h5" if fmt == HDF5 else "model.keras")
                alias.symlink_to(path.resolve())
                return keras.models.load_model(alias, compile=False, safe_mode=True)
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except MemoryError:
        raise
    except Exception as e:  # Keras raises many types here; all mean "does not load"
        text = _short(e, 300)
        if "Lambda" in text or "safe_mode" in text:
            raise UnsafeModel(f"{Path(path).name}: Keras refused to load it in safe mode: {text}") from None
        if "OOM" in text or "RESOURCE_EXHAUSTED" in text or "Unable to allocate" in text:
            raise MemoryError(text) from None
        raise ModelLoadError(f"{Path(path).name}: Keras could not rebuild the model: {text}",
                             hint="Check that the file was saved with model.save() from a working model.") from None


class BuiltModels:
    """Models built from their configuration by ``load``, kept to be loaded again with other weights.

    Building a model from its configuration is most of what loading a small ``.h5`` costs, and a class hands in
    many files of one network with other weights.  A file whose network is one already built (and so already
    loaded in safe mode) gets that model, with the file's own weights loaded by Keras' HDF5 loader exactly as
    ``load_model`` loads them into the model it builds (``load_weights_from_hdf5_group`` on ``model_weights``:
    every layer's weights set, in the layers' order): the model ``load`` would give, but for the names of its
    layers.  The network is the configuration's text (``build_key``), without the names of a plain
    ``Sequential``'s layers, which label them and nothing else (a notebook numbers them by how many layers it
    made before).  Anything that fails on that path is loaded afresh by ``load``, which fails the same way,
    in its own words.  ``reused`` says whether the last model came from here (a caller that meets an error with
    it measures a fresh one, so that no layer name of another file reaches a message).  Only HDF5 files named
    ``.h5``; others are loaded by ``load``.  At most ``size`` models and ``max_parameters`` weights are kept."""

    def __init__(self, size: int = 64, max_parameters: int = 2_000_000):
        self.size, self.max_parameters = size, max_parameters
        self.models: dict[str, object] = {}  # build key -> model, the most recently used last
        self.built = self.hits = 0
        self.reused = False

    def load(self, path: Path, config: dict, config_text: str):
        path = Path(path)
        self.reused = False
        legacy = _legacy_h5()
        if path.suffix != ".h5" or legacy is None:
            return load(path)
        key = build_key(config, config_text)
        model = self.models.pop(key, None)
        if model is not None:
            try:
                import h5py

                with h5py.File(path, "r") as f:
                    legacy.load_weights_from_hdf5_group(legacy.safe_get_h5_group(f, "model_weights"), model)
                self.hits += 1
                self.reused = True
            except MemoryError:
                raise
            except Exception:
                model = None  # half-filled: dropped
        if model is None:
            model = load(path)
            self.built += 1
        self.models[key] = model
        while len(self.models) > self.size or (
                len(self.models) > 1 and sum(m.count_params() for m in self.models.values()) > self.max_parameters):
            self.models.pop(next(iter(self.models)))
        return model


def build_key(config: dict, config_text: str) -> str:
    """What decides the model ``load`` builds from a configuration: its text; for a ``Sequential`` of plain
    layers (no nested model, whose layers another part of the configuration could name), the configuration
    without the model's and the layers' names."""
    layers = (config.get("config") or {}).get("layers") if isinstance(config, dict) else None
    if config.get("class_name") != "Sequential" or not isinstance(layers, list) or not all(
            isinstance(layer, dict) and layer.get("class_name") not in ALLOWED_MODELS
            and isinstance(layer.get("config"), dict) for layer in layers):
        return "text:" + config_text
    plain = json.loads(config_text)
    plain["config"].pop("name", None)
    for layer in plain["config"]["layers"]:
        layer["config"].pop("name", None)
    return "sequential:" + json.dumps(plain, sort_keys=True)


def _legacy_h5():
    """Keras' legacy HDF5 loader, which ``load_model`` uses for ``.h5`` files (None if this Keras has moved it)."""
    try:
        from keras.src.legacy.saving import legacy_h5_format

        legacy_h5_format.load_weights_from_hdf5_group  # noqa: B018
        legacy_h5_format.safe_get_h5_group  # noqa: B018
        return legacy_h5_format
    except (ImportError, AttributeError):
        return None


def _activation_name(layer) -> str:
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", None) or type(act).__name__
    return name.lower()


def describe(model) -> ModelInfo:
    """Summarise a loaded model as plain data."""
    import keras

    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0] if len(shape) == 1 else None
    inputs = shape[-1] if shape else None
    out_shape = model.output_shape
    outputs = out_shape[-1] if out_shape and not isinstance(out_shape, list) else None
    dense, other = [], []
    for layer in _flat_layers(model, keras):
        cls = type(layer).__name__
        if cls == "Dense":
            dense.append([int(layer.units), _activation_name(layer)])
        elif cls in ("Activation",) + tuple(_ACTIVATION_LAYERS):
            act = _activation_name(layer) if cls == "Activation" else _ACTIVATION_LAYERS[cls]
            if dense and dense[-1][1] == "linear":
                dense[-1][1] = act  # Dense(4) + Activation('relu') is Dense(4, relu)
            else:
                other.append(f"{cls}({act})")
        elif cls not in ("InputLayer",):
            other.append(cls)
    finite = all(bool(np.all(np.isfinite(w))) for w in model.get_weights())
    return ModelInfo(inputs=inputs, outputs=outputs, dense=tuple(tuple(layer) for layer in dense),
                     other_layers=tuple(other), parameters=int(model.count_params()), finite=finite)


def _flat_layers(model, keras):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer, keras)
        else:
            yield layer


def predict(model, x: np.ndarray, batch: int = 65536) -> np.ndarray:
    """Outputs of ``model`` on ``x`` as float64, computed by calling the model directly."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    parts = [np.asarray(model(x[i:i + batch], training=False)) for i in range(0, len(x), batch)]
    out = np.concatenate(parts).astype(np.float64)
    return out.reshape(len(x), -1)
