"""Re-training a student's recipe, the low-level part: the recipe as data, vetted, seeded and trained.

``recipe_from_capture`` (what a captured ``fit`` recorded, unvetted), ``vet`` (the recipe rebuilt from
allow-lists, or ``RecipeRefused`` saying why not), ``describe``, ``retrain_seed`` (from the grading secret)
and ``train`` (in the training worker only, where no student code runs).  The stage that decides and
budgets re-trainings is ``grader.retrain``.  Why: docs/design/retrain.md.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

#: optimizer classes a recipe may name (``keras.optimizers.<name>``)
OPTIMIZERS = ("SGD", "Adam", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam", "AdamW")
#: loss functions a recipe may name (``compile(loss="...")``)
LOSS_NAMES = frozenset({
    "categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy",
    "binary_focal_crossentropy", "categorical_focal_crossentropy", "mean_squared_error", "mse",
    "mean_absolute_error", "mae", "mean_absolute_percentage_error", "mape", "mean_squared_logarithmic_error",
    "msle", "huber", "log_cosh", "kl_divergence", "kld", "hinge", "squared_hinge", "categorical_hinge", "poisson",
    "cosine_similarity",
})
#: loss classes a recipe may name (``compile(loss=keras.losses.<Class>(...))``)
LOSS_CLASSES = frozenset({
    "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy", "BinaryFocalCrossentropy",
    "CategoricalFocalCrossentropy", "MeanSquaredError", "MeanAbsoluteError", "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError", "Huber", "LogCosh", "KLDivergence", "Hinge", "SquaredHinge", "CategoricalHinge",
    "Poisson", "CosineSimilarity",
})
_REDUCTIONS = {None, "sum_over_batch_size", "sum", "mean", "none", "mean_with_sample_weight"}
#: settings of an optimizer or loss config that are names, not numbers: dropped (Keras names them itself)
_NAMES = {"name", "dtype"}


class RecipeRefused(Exception):
    """A recipe the grader does not re-train; the message says why, in words for the student."""


def recipe_from_capture(settings: dict, x, y) -> dict:
    """The recipe of a captured ``fit`` (``harvest.Capture.settings`` and its training data), unvetted."""
    return {"optimizer": settings.get("optimizer_config"), "optimizer_class": settings.get("optimizer"),
            "loss": settings.get("loss_config", settings.get("loss")), "epochs": settings.get("epochs"),
            "batch_size": settings.get("batch_size"), "shuffle": settings.get("shuffle", True),
            "validation_split": settings.get("validation_split", 0.0), "x": x, "y": y}


def _plain_config(config, what: str) -> dict:
    """A config of plain settings (finite numbers, booleans, None, a reduction name); names are dropped."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise RecipeRefused(f"its {what} configuration is not a table of settings")
    out = {}
    for key, value in config.items():
        if key in _NAMES:
            continue
        if key == "reduction" and value in _REDUCTIONS:
            out[key] = value
        elif value is None or isinstance(value, bool):
            out[key] = value
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = value
        elif isinstance(value, dict):
            raise RecipeRefused(f"its {what} setting {key!r} is an object ({value.get('class_name', '?')}), "
                                "which the grader does not rebuild (only plain numbers)")
        else:
            raise RecipeRefused(f"its {what} setting {key!r} is {str(value)[:40]!r}, not a plain number")
    return out


def _optimizer(recipe: dict) -> tuple[str, dict]:
    config = recipe.get("optimizer")
    name = config.get("class_name") if isinstance(config, dict) else recipe.get("optimizer_class")
    if not isinstance(name, str) or name not in OPTIMIZERS:
        shown = name if isinstance(name, str) else "unknown"
        raise RecipeRefused(f"its optimizer ({shown[:60]}) is not one the grader re-trains "
                            f"({', '.join(OPTIMIZERS)})")
    if not isinstance(config, dict) or (config.get("module") not in (None, "keras.optimizers")):
        raise RecipeRefused(f"its {name} optimizer's configuration was not recorded as Keras' own")
    settings = _plain_config(config.get("config"), f"{name} optimizer's")
    lr = settings.get("learning_rate")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise RecipeRefused(f"its {name} optimizer has no positive learning rate")
    return name, settings


def _loss(recipe: dict) -> tuple[str, dict | None]:
    """(a standard loss name, None) or (a standard loss class, its settings)."""
    loss = recipe.get("loss")
    if isinstance(loss, str):
        if loss in LOSS_NAMES:
            return loss, None
        raise RecipeRefused(f"its loss {loss[:60]!r} is not a standard Keras loss")
    if isinstance(loss, dict):
        name = loss.get("class_name")
        if name == "function" and loss.get("config") in LOSS_NAMES:  # loss=keras.losses.categorical_crossentropy
            return loss["config"], None
        if loss.get("module") in (None, "keras.losses") and name in LOSS_CLASSES:
            return name, _plain_config(loss.get("config"), f"{name} loss's")
        shown = name if isinstance(name, str) else "unknown"
        raise RecipeRefused(f"its loss ({shown[:60]}) is not a standard Keras loss")
    raise RecipeRefused("its loss was not recorded")


def _whole(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def vet(recipe: dict | None) -> dict:
    """The recipe, rebuilt from allow-lists only: ``{optimizer: (class, settings), loss: (name, settings),
    epochs, batch_size, shuffle, validation_split}``; ``RecipeRefused`` says why a recipe is not re-trained."""
    if not recipe:
        raise RecipeRefused("the notebook's training was not recorded")
    x, y = recipe.get("x"), recipe.get("y")
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and len(x) == len(y) and len(x) > 0):
        raise RecipeRefused("the notebook's training data was not captured (too large, or not arrays)")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise RecipeRefused("the training data holds NaN or infinite values")
    epochs, batch = recipe.get("epochs"), recipe.get("batch_size")
    if not _whole(epochs, 1):
        raise RecipeRefused(f"its number of epochs ({str(epochs)[:20]}) is not a positive whole number")
    if batch is not None and not _whole(batch, 1):
        raise RecipeRefused(f"its batch size ({str(batch)[:20]}) is not a positive whole number")
    split = recipe.get("validation_split") or 0.0
    if not (isinstance(split, (int, float)) and not isinstance(split, bool) and 0 <= split < 1):
        raise RecipeRefused(f"its validation_split ({str(split)[:20]}) is not a fraction below 1")
    return {"optimizer": _optimizer(recipe), "loss": _loss(recipe), "epochs": epochs, "batch_size": batch,
            "shuffle": recipe.get("shuffle") is not False, "validation_split": float(split)}


def describe(vetted: dict, epochs: int | None = None) -> str:
    """The recipe in words, e.g. ``SGD (learning rate 0.01), categorical_crossentropy, 250 epochs, batch size 32``."""
    name, settings = vetted["optimizer"]
    loss = vetted["loss"][0]
    parts = [f"{name} (learning rate {settings['learning_rate']:.3g})", loss,
             f"{epochs or vetted['epochs']} epochs", f"batch size {vetted['batch_size'] or 32}"]
    if vetted["validation_split"]:
        parts.append(f"validation_split {vetted['validation_split']:g}")
    if not vetted["shuffle"]:
        parts.append("no shuffling")
    return ", ".join(parts)


def retrain_seed(seeds: dict, vetted: dict, recipe: dict, architecture, index: int) -> int:
    """The seed of re-training ``index`` (0, 1, ...) of a recipe: an HMAC under the re-trainings' key
    (``heldout.run_key``, from the stretched grading secret) of the vetted recipe, its training data and the
    architecture; below 2**31, as Keras takes them."""
    from .heldout import keyed_seed, run_key

    return keyed_seed(run_key(seeds, "retrain"),
                      json.dumps([vetted, architecture, index], sort_keys=True, default=str),
                      *(np.ascontiguousarray(a, dtype=np.float64).tobytes() for a in (recipe["x"], recipe["y"])),
                      bits=31)


def train(model_path, recipe: dict, seed: int, max_epochs: int, out_path, limits) -> dict:
    """Train ``recipe`` afresh on the architecture of ``model_path`` and save the result to ``out_path``
    (training worker side).  Returns ``{"epochs": epochs trained}``."""
    import keras

    from .. import keras_io
    from ..execute import fused_fit
    from ..intake.formats import sniff_format

    fused_fit.install()  # the notebooks' fused fit (Keras' semantics, compiled once per recipe and shapes)
    vetted = vet(recipe)
    path = Path(model_path)
    keras_io.read_config(path, sniff_format(path), limits.max_parameters, limits.max_layers)
    keras.backend.clear_session()  # a clean slate: no state of the previous re-training
    template = keras_io.load(path)
    keras.utils.set_random_seed(seed)
    model = keras.models.clone_model(template)  # the same layers, freshly initialised under the seed
    opt_name, opt_settings = vetted["optimizer"]
    optimizer = getattr(keras.optimizers, opt_name).from_config(opt_settings)
    loss_name, loss_settings = vetted["loss"]
    loss = keras.losses.get(loss_name) if loss_settings is None else \
        getattr(keras.losses, loss_name).from_config(loss_settings)
    model.compile(optimizer=optimizer, loss=loss)
    epochs = min(vetted["epochs"], max_epochs)
    model.fit(np.asarray(recipe["x"], dtype=np.float32), np.asarray(recipe["y"], dtype=np.float32),
              epochs=epochs, batch_size=vetted["batch_size"], shuffle=vetted["shuffle"],
              validation_split=vetted["validation_split"], verbose=0)
    model.save(out_path)
    return {"epochs": epochs, "fused": bool(fused_fit.last_report.get("fused"))}
