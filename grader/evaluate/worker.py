"""The evaluation worker: loads and runs models in a clean, capped process.

``Evaluator`` (parent side) owns one worker process started with ``spawn`` (nothing of the parent, no
student code), capped in memory and time; it makes the held-out data from the seeds it is sent, never the
secret.  A worker that hangs or dies is replaced; that file gets a ``SubmissionError`` and the batch goes on.
Re-training a recipe (``Evaluator.retrain``) runs in a second worker of the same kind on the spec's training
backend.  Why: docs/design/evaluate.md.
"""
from __future__ import annotations

import gc
import hashlib
import multiprocessing as mp
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import errors, untrusted
from ..errors import EvaluationFailed, EvaluationOutOfMemory, EvaluationTimeout, SubmissionError, WorkerCrashed
from ..logs import log, worker_output_to_log
from ..records import INTERNAL_ERROR, DatasetResult, Evaluation, Provenance, Trained

STARTUP_TIMEOUT_S = 180.0
CLEANUP_EVERY = 25  # requests between clearing Keras' session and collecting garbage


def _apply_limits(memory_mb: int) -> bool:
    """Cap this process's memory; False where the platform refuses (then the parent warns)."""
    try:
        import resource

        cap = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
        return True
    except (ImportError, ValueError, OSError):
        return False


def _quiet_tensorflow(backend: str) -> None:
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bit-stable CPU results
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # one thread for TensorFlow's operations, as the notebooks' kernels have: the worker runs beside a kernel
    # (or two) and measures small networks, so more threads only take turns with the kernel's training
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


class _Session:
    """Worker-side state: the assignment, its held-out data, Keras."""

    def __init__(self, assignment, seeds: dict[str, int]):
        from .heldout import make_heldout, make_training

        self.assignment = assignment  # parsed by the parent, sent as data: the spec is not read again
        self.limits = self.assignment.limits
        self.heldout = {name: make_heldout(self.assignment, ds, seeds[name])  # none in the training worker
                        for name, ds in self.assignment.datasets.items() if name in seeds}
        self.training = {name: make_training(self.assignment, ds)
                         for name, ds in self.assignment.datasets.items()}
        import keras  # noqa: F401  (import once, up front)

        from .. import keras_io

        # a class's many files of one network: the network built once
        self.models = keras_io.BuiltModels(max_parameters=self.limits.max_parameters)

    def retrain(self, request: dict) -> dict:
        """Train a vetted recipe afresh on a model file's architecture and save it (``retrain.train``)."""
        from . import retrain

        try:
            return retrain.train(request["path"], request["recipe"], request["seed"], request["max_epochs"],
                                 request["out"], self.limits)
        except retrain.RecipeRefused as e:
            raise EvaluationFailed(f"the recipe was not re-trained: {e}") from None

    def handle(self, request: dict) -> dict:
        if request.get("kind") == "retrain":
            return self.retrain(request)
        return self.evaluate(request["path"], request.get("training"), request.get("preprocessing"))

    def evaluate(self, path: str, training: dict | None, preprocessing: dict | None = None) -> dict:
        from .. import keras_io
        from ..intake.formats import HDF5, sniff_format

        path = Path(path)
        fmt = sniff_format(path)
        vetted = keras_io.read_config(path, fmt, self.limits.max_parameters, self.limits.max_layers)
        if fmt != HDF5:
            return self.measure(path, fmt, vetted, keras_io.load(path), training, preprocessing)
        model = self.models.load(path, vetted["config"], vetted["config_text"])
        try:
            return self.measure(path, fmt, vetted, model, training, preprocessing)
        except MemoryError:
            raise
        except Exception:
            if not self.models.reused:
                raise
            # measured again on the model ``load`` builds, so that what is said names this file's own layers
            return self.measure(path, fmt, vetted, keras_io.load(path), training, preprocessing)

    def measure(self, path: Path, fmt: str, vetted: dict, model, training: dict | None,
                preprocessing: dict | None) -> dict:
        """The measurements of a loaded model (``evaluate``)."""
        from .. import keras_io
        from . import metrics as M

        info = replace(keras_io.describe(model), keras_version=claimed_version(vetted["keras_version"]))
        result = {"format": fmt, "info": info.to_json(), "datasets": {}, "weights_sha256": weights_digest(model),
                  "weights_sketch": weights_sketch(model)}
        if not info.finite:
            return result  # nothing to measure: the report explains NaN/inf weights
        scaling = None
        if preprocessing is not None:
            scaling, result["preprocessing"] = read_scaling(preprocessing.get("path"), info.inputs)
        wanted = {t.dataset for t in self.assignment.model_tasks() if t.architecture.inputs == info.inputs}
        train_accuracy = None
        for name in sorted(wanted):
            ds = self.assignment.datasets[name]
            held = self.heldout[name]
            x = held["x"] if scaling is None else (held["x"] - scaling[0]) / scaling[1]
            try:
                out = keras_io.predict(model, x)
            except MemoryError:
                raise
            except Exception as e:
                raise EvaluationFailed(f"{path.name}: the model loaded but failed on the held-out data: "
                                       f"{keras_io._short(e)}") from None
            metrics, plot = {}, {}
            if ds.kind == "function":
                if out.shape[1] != 1:
                    continue
                metrics = M.function_metrics(out, held["y"])
                train = self.training[name]
                metrics["train_mse"] = M.function_metrics(keras_io.predict(model, train["x"]), train["y"])["mse"]
                xs = np.linspace(*ds.domain, M.PLOT_CURVE_POINTS)
                plot = {"x": xs.astype(np.float32), "y_pred": keras_io.predict(model, xs)[:, 0].astype(np.float32)}
            else:
                metrics = M.class_metrics(out, held["y"])
                if preprocessing is not None and scaling is None and held["x"].shape[1] > 2:
                    # no usable scaling file: would the model do better on standardised inputs?
                    z = (held["x"] - held["x"].mean(axis=0)) / np.where(held["x"].std(axis=0) > 0,
                                                                         held["x"].std(axis=0), 1.0)
                    metrics["accuracy_standardized"] = M.class_metrics(
                        keras_io.predict(model, z), held["y"])["accuracy"]
                if training and name in training.get("datasets", ()):
                    # each dataset the training data may come from (``harvest.identify_datasets``)
                    if train_accuracy is None:
                        train_accuracy = M.class_metrics(keras_io.predict(model, training["x"]),
                                                         training["y"])["accuracy"]
                    metrics["train_accuracy"] = train_accuracy
                    metrics["gap"] = train_accuracy - metrics["accuracy"]
                if held["x"].shape[1] != 2:  # decision regions are drawn for two inputs only
                    result["datasets"][name] = DatasetResult(metrics, plot).to_json()
                    continue
                shown = M.plot_sample(held["y"])  # both classes (held-out data come sorted by class)
                extent = M.plot_extent(ds.extent, held["x"][shown])
                grid = M.grid_points(extent)
                plot = {
                    # plot data only (metrics are computed above at full precision); kept small because the
                    # gradebook stores it for every model
                    "grid": M.positive_probability(keras_io.predict(model, grid)).reshape(
                        M.PLOT_GRID, M.PLOT_GRID).astype(np.float16),
                    "extent": extent,  # of the grid and the axes
                    "x": held["x"][shown].astype(np.float32), "y": held["y"][shown].astype(np.int8),
                    "pred": M.class_predictions(out[shown]).astype(np.int8),
                }
            result["datasets"][name] = DatasetResult(metrics, plot).to_json()
        return result


#: the longest Keras version a model file's claim is kept to (real ones: "3.6.0", "2.15.0", "2.1.6-tf")
MAX_VERSION_CHARS = 40


def claimed_version(value) -> str | None:
    """The Keras version a model file claims: the student's word (a .keras file's metadata.json may hold any
    JSON, an .h5 attribute any HDF5 value), kept as a short text, or None when it is no text."""
    return value[:MAX_VERSION_CHARS] if isinstance(value, str) else None


def weights_digest(model) -> str:
    """A hash of a model's weights (dtypes, shapes, bytes): identical work is found by it (``review``)."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        w = np.ascontiguousarray(w)
        digest.update(f"{w.dtype.str}{w.shape};".encode())
        digest.update(w.tobytes())
    return digest.hexdigest()


#: how many random projections a weights sketch keeps
SKETCH_SIZE = 16


def weights_sketch(model) -> dict | None:
    """A small sketch of a model's weights that identical work compares within a tolerance
    (``review.WEIGHTS_RTOL``), where a hash would miss weights moved by one ulp: the shapes, the weights'
    Euclidean norm and ``SKETCH_SIZE`` projections of them on fixed pseudo-random unit-variance directions
    (the same for every model of those shapes).  None for weights that are not all finite."""
    weights = [np.asarray(w, dtype=np.float64).ravel() for w in model.get_weights()]
    flat = np.concatenate(weights) if weights else np.zeros(0)
    if not flat.size or not np.all(np.isfinite(flat)):
        return None
    rng = np.random.default_rng(flat.size)
    v = np.zeros(SKETCH_SIZE)
    for start in range(0, flat.size, 65536):  # the directions drawn in blocks: bounded memory for any model
        part = flat[start:start + 65536]
        v += rng.standard_normal((SKETCH_SIZE, part.size)) @ part
    return {"shapes": [list(np.shape(w)) for w in model.get_weights()], "norm": float(np.linalg.norm(flat)),
            "v": [float(x) for x in v]}


def read_scaling(path: str | None, inputs: int):
    """A student's scaling file (``Xt = (X - s[0]) / s[1]``, a 2 x inputs array written by numpy.savetxt).

    Returns (the array to apply or None, a report {file, applied, problems}).  Formatting slips the
    course warns about are named and, where the intent is clear, read as meant: comma delimiters, a
    transposed inputs x 2 array.  A wrong size, zero or non-finite scales cannot be applied."""
    report = {"file": Path(path).name if path else None, "applied": False, "problems": []}
    if path is None:
        report["problems"].append("missing")
        return None, report
    try:
        with open(path, "rb") as f:
            text = f.read(256 * 1024).decode("utf-8", errors="replace")
    except OSError:
        report["problems"].append("unreadable")
        return None, report
    import io

    try:
        arr = np.loadtxt(io.StringIO(text), ndmin=2)
    except ValueError:
        try:
            arr = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2)
            report["problems"].append("comma")
        except ValueError:
            report["problems"].append("not_numbers")
            return None, report
    report["shape"] = list(arr.shape)
    if arr.shape == (inputs, 2) and inputs != 2:
        arr = arr.T
        report["problems"].append("transposed")
    elif arr.shape != (2, inputs):
        report["problems"].append("wrong_size")
        return None, report
    if not np.all(np.isfinite(arr)):
        report["problems"].append("not_finite")
        return None, report
    if np.any(arr[1] == 0):
        report["problems"].append("zero_scale")
        return None, report
    report["applied"] = True
    return arr, report


def _serve(conn, assignment, seeds: dict[str, int], memory_mb: int, backend: str) -> None:
    """Worker main loop (runs in the spawned process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    worker_output_to_log()  # in a batch, the libraries' own warnings go to its log, not the TA's terminal
    capped = _apply_limits(memory_mb)
    _quiet_tensorflow(backend)
    if backend == "jax":  # the training worker: saving what it trains would import TensorFlow for nothing
        from ..execute.compile_cache import defer_tensorflow

        defer_tensorflow()
    try:
        session = _Session(assignment, seeds)
    except BaseException as e:  # report start-up failure, then exit
        conn.send({"error": WorkerCrashed(f"the evaluation worker could not start: {e}")})
        return
    gc.collect()
    gc.freeze()  # Keras', TensorFlow's and the held-out data's objects live as long as the worker: no collection
    #              looks at them again, which makes collecting the garbage of dropped models cheap
    conn.send({"ready": True, "memory_capped": capped})
    import keras

    served = 0
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        # an error crosses back as itself (GraderError pickles with its class, message and hint)
        try:
            reply = {"ok": session.handle(request)}
        except SubmissionError as e:
            reply = {"error": e}
        except untrusted.Refused as e:  # a file that is no regular file: never opened, never waited on
            reply = {"error": errors.UnreadableFile(f"{Path(request['path']).name}: {e}; it was not graded.")}
        except MemoryError:
            reply = {"error": EvaluationOutOfMemory(
                f"{Path(request['path']).name}: loading or running this model needed more than the grader's "
                f"memory cap of {memory_mb} MB.",
                hint="A network for this course needs a few thousand parameters at most; check the number of "
                     "units in each layer.")}
        except Exception as e:
            reply = {"error": EvaluationFailed(f"{Path(request['path']).name}: {type(e).__name__}: {str(e)[:300]}")}
        conn.send(reply)
        served += 1
        if served % CLEANUP_EVERY == 0 or "error" in reply:
            # Keras' global state and the garbage of dropped models, now and then (with the start-up's objects
            # frozen out of collection, a few hundredths of a second; about 0.7 s without)
            keras.backend.clear_session()
            gc.collect()


def read_reply(reply, name: str, provenance: Provenance | None = None) -> Evaluation:
    """The worker's reply about the model file ``name``, typed (``Evaluation.from_worker``).  A reply that is not
    as the worker writes it is a grader bug that fails this model only: an ``EvaluationFailed`` that says so,
    its traceback in the batch's log."""
    return _typed(name, lambda: Evaluation.from_worker(reply, provenance))


def _typed(name: str, read):
    """``read()``: a worker's reply about ``name`` as its record (see ``read_reply``)."""
    try:
        return read()
    except Exception as e:
        log.exception("a worker's reply about %s could not be read", name)
        raise EvaluationFailed(f"{INTERNAL_ERROR} ({name}: the grader's worker gave a reply it could not read: "
                               f"{str(e)[:300]}); a TA will look at it (the full traceback is in the batch's "
                               "grader.log).") from e


class Evaluator:
    """Parent side of the evaluation worker.

    ``evaluate(path)`` returns the worker's measurements of one model file, an
    ``Evaluation`` (its reply read once, here: ``read_reply``), or raises the
    ``SubmissionError`` that explains why it could not.  The worker
    is started on first use and replaced whenever it dies or times out.
    ``retrain(...)`` trains a student's recipe afresh in the training worker
    (``trainer``, an ``Evaluator`` on the training backend, started on first
    use, closed with this one).
    """

    def __init__(self, assignment, seeds: dict[str, int], *, backend: str | None = None):
        """``backend``: the worker's Keras backend (default: the spec's evaluation backend)."""
        self.assignment = assignment
        self.seeds = dict(seeds)
        self.limits = assignment.limits
        self.backend = backend or self.limits.backend
        self._trainer: Evaluator | None = None  # the training worker, started on the first re-training
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None
        self._ready = False
        self.restarts = 0
        self.memory_capped: bool | None = None  # known once the worker has started

    # -- lifecycle --------------------------------------------------------
    def _start(self):
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_serve, name="grader-eval",
            args=(child, self.assignment, self.seeds, self.limits.memory_mb, self.backend),
            daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self._ready = False

    def _wait_ready(self):
        try:
            reply = self._receive(STARTUP_TIMEOUT_S, what="start")
        except SubmissionError as e:
            raise errors.FatalError(f"the evaluation worker could not start: {e.message}") from None
        if not reply.get("ready"):
            self._kill()
            error = reply.get("error")
            raise errors.FatalError(error.message if isinstance(error, errors.GraderError)
                                    else "the evaluation worker could not start")
        self.memory_capped = bool(reply.get("memory_capped"))
        self._ready = True

    def start(self, wait: bool = True):
        """Start the worker now (it is otherwise started on first use); ``wait=False`` returns at once
        and lets Keras import in the background."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        if wait and not self._ready:
            self._wait_ready()

    def _kill(self):
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
        self._ready = False

    def close(self):
        """Stop the worker (and the training worker). It holds no state worth a clean exit, so
        TensorFlow's slow teardown is not waited for."""
        if self._trainer is not None:
            self._trainer.close()
            self._trainer = None
        if self._proc is not None and self._proc.is_alive() and self._ready:
            try:
                self._conn.send(None)
                self._proc.join(0.2)
            except (OSError, BrokenPipeError):
                pass
        self._kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- requests -----------------------------------------------------------
    def _receive(self, timeout: float, what: str, doing: str = "loading and evaluating the model"):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                self.restarts += 1
                raise EvaluationTimeout(f"{what}: {doing} took longer than {timeout:.0f} s, the grader's limit.")
            try:
                if self._conn.poll(min(left, 1.0)):
                    return self._conn.recv()
            except (EOFError, OSError):
                pass
            if not self._proc.is_alive():
                code = self._proc.exitcode
                self._kill()
                self.restarts += 1
                if code is not None and code in (-signal.SIGKILL, -signal.SIGABRT, -signal.SIGSEGV, -signal.SIGBUS):
                    raise EvaluationOutOfMemory(
                        f"{what}: the evaluation worker was killed (signal {-code}) while handling this model, "
                        f"most likely by running out of its {self.limits.memory_mb} MB memory cap.")
                raise WorkerCrashed(f"{what}: the evaluation worker died (exit code {code}) while handling "
                                    "this model.")

    def evaluate(self, path, training: dict | None = None, preprocessing: dict | None = None, *,
                 timeout: float | None = None, provenance: Provenance | None = None) -> Evaluation:
        """``preprocessing``: ``{"path": scaling file or None}`` for a task whose inputs the student scales.
        ``timeout``: this request's time limit (default: the spec's ``timeout_s``); ``provenance``: how the model
        was made (its ``Source``'s), put in the ``Evaluation``."""
        request = {"path": str(path), "training": training, "preprocessing": preprocessing}
        reply = self._call(request, self.limits.timeout_s if timeout is None else timeout, Path(path).name)
        return read_reply(reply, Path(path).name, provenance)

    @property
    def trainer(self) -> "Evaluator":
        """The training worker (not started until used): a worker like this one on the training backend,
        without held-out data."""
        if self._trainer is None:
            self._trainer = Evaluator(self.assignment, {}, backend=self.limits.retraining.backend)
        return self._trainer

    def retrain(self, path, recipe: dict, seed: int, max_epochs: int, out, *, timeout: float) -> Trained:
        """Train ``recipe`` (``retrain.recipe_from_capture``) afresh, under ``seed``, on the architecture of the
        model file ``path`` (the grader's copy), for at most ``max_epochs``; the trained model is saved to
        ``out`` for ``evaluate``.  Runs in the training worker; returns what it trained (``Trained``)."""
        request = {"kind": "retrain", "path": str(path), "recipe": recipe, "seed": int(seed),
                   "max_epochs": int(max_epochs), "out": str(out)}
        reply = self.trainer._call(request, timeout, Path(path).name, doing="re-training its recipe")
        return _typed(Path(path).name, lambda: Trained.from_worker(reply))

    def _call(self, request: dict, timeout: float, what: str, doing: str = "loading and evaluating the model"):
        """Send one request to the worker (started or replaced as needed) and return its answer, or raise the
        ``SubmissionError`` that explains why there is none."""
        self.start()
        try:
            self._conn.send(request)
        except (OSError, BrokenPipeError):
            self._kill()
            self.start()
            self._conn.send(request)
        reply = self._receive(timeout, what=what, doing=doing)
        if "ok" in reply:
            return reply["ok"]
        error = reply.get("error")
        raise error if isinstance(error, SubmissionError) else EvaluationFailed(f"{what}: evaluation failed")
