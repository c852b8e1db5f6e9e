"""The records the stages hand each other, typed, at the bottom of the package (imports nothing of it).

``Source`` and ``Evaluation`` (one model, as measured: its ``ModelInfo``, a ``DatasetResult`` per held-out
dataset, its ``Provenance``), ``Retraining`` and its ``RetrainingRun`` (what re-training its recipe measured),
``Measurements`` (one submission, as measured and re-trained), ``FileResult``, ``TaskResult`` and
``StudentResult`` (as scored).  Each has ``to_json``/``from_json``; only these read the older gradebook shapes,
and what the worker found is written back with the keys it was stored with.  The evaluation worker's reply is
read once, strictly, where it crosses into the grader (``Evaluation.from_worker``); a record is never built from
a dict otherwise.  A stage reads a record's fields by name (``evaluation.info.inputs``), never by JSON keys.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace

PASS_FRACTION = 0.5  # a student 'passes' (in progress counts and summaries) at half the maximum
INTERNAL_ERROR = "The grader failed on this submission"  # a task's message starts so: a grader bug
COULD_NOT_GRADE = "Could not be graded"  # a task's message starts so: the grader's environment failed


#: a record's own bookkeeping, never a key of its JSON
_BOOKKEEPING = ("extra", "stored")


def _named(cls) -> list[str]:
    return [f.name for f in fields(cls) if f.name not in _BOOKKEEPING]


def _read(cls, d: dict, convert: dict | None = None):
    """A record of ``cls`` from its stored JSON ``d``: its fields by name (``convert``ed where given), every other
    key kept in ``extra``, and the keys ``d`` had, in their order (``stored``), so it is written back as it came."""
    names = _named(cls)
    convert = convert or {}
    kept = {k: (convert[k](d[k]) if k in convert else d[k]) for k in names if k in d}
    return cls(**kept, extra={k: v for k, v in d.items() if k not in names}, stored=tuple(d))


def _want(value, kinds: tuple, what: str, *, none: bool = False):
    """``value`` if it is one of ``kinds`` (a bool is no number), else a ``ValueError`` naming ``what``."""
    if value is None and none:
        return value
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds) + (" or None" if none else "")
        raise ValueError(f"{what} is {type(value).__name__}, not {names}")
    return value


def _keys(d, allowed: tuple, required: tuple, what: str) -> dict:
    """``d``, a dict with every ``required`` key and no other than ``allowed``, else a ``ValueError``."""
    _want(d, (dict,), what)
    missing = [k for k in required if k not in d]
    unknown = sorted(str(k) for k in d if k not in allowed)
    if missing or unknown:
        raise ValueError(f"{what} " + "; ".join(
            ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"has unknown {', '.join(unknown)}"]
                                                                   if unknown else [])))
    return d


def _write(record, always: bool = False, convert: dict | None = None) -> dict:
    """A record's JSON: the keys it was read with (and any field set since to other than its default), or, made
    afresh, every field (only those not None unless ``always``) and then ``extra``."""
    names = _named(type(record))
    convert = convert or {}
    if record.stored is not None:
        defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(record)}
        keys = [k for k in record.stored if k in names or k in record.extra]
        keys += [k for k in names if k not in record.stored and getattr(record, k) != defaults[k]]
    else:
        keys = [k for k in names if always or getattr(record, k) is not None] + list(record.extra)
    return {k: (record.extra[k] if k not in names else
                convert[k](getattr(record, k)) if k in convert else getattr(record, k)) for k in keys}


@dataclass(frozen=True)
class Provenance:
    """How a model was made, as the grader's harvester saw it (``harvest.Capture.provenance``; a capture's settings
    are the notebook's word: forgeable, they only ever cost credit).  ``made_by``: "fit", "predict" (captured from
    a notebook's run), "file" (handed in) or "saved" (a file the run saved); ``keras``: "2" for a Keras 2 run's
    model; ``samples``/``classes``: the points and distinct labels it was fitted on."""

    made_by: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    weight_change: float | None = None
    fused: bool | None = None
    fused_fallback: str | None = None
    keras: str | None = None
    samples: int | None = None
    classes: int | None = None
    extra: dict = field(default_factory=dict)  # keys no field names, kept as they came
    stored: tuple | None = field(default=None, compare=False, repr=False)  # the keys it was read with

    def to_json(self) -> dict:
        return _write(self)

    @classmethod
    def from_json(cls, d) -> "Provenance | None":
        """From a stored dict (or the harvester's); a ``Provenance`` as it is; None as None."""
        return d if d is None or isinstance(d, Provenance) else _read(cls, d)


def _layers_json(dense) -> list:
    return [list(layer) for layer in dense]


def _layers(dense) -> tuple:
    return tuple(tuple(layer) for layer in dense)


def _dense_layer(layer) -> tuple:
    if len(_want(layer, (list, tuple), "a dense layer")) != 2:
        raise ValueError(f"a dense layer has {len(layer)} parts, not (units, activation)")
    return _want(layer[0], (int,), "a dense layer's units"), _want(layer[1], (str,), "an activation")


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, as the evaluation worker read it (``keras_io.describe``): the width of its input and of its
    output (None when not one tensor), its ``dense`` layers as ``(units, activation)`` (an activation layer after
    a linear Dense folded in), the class names of its ``other_layers`` that have an effect, its parameters,
    whether every weight is finite, and the Keras that saved it (None when the file does not say, or in older
    gradebooks)."""

    inputs: int | None = None
    outputs: int | None = None
    dense: tuple = ()
    other_layers: tuple = ()
    parameters: int = 0
    finite: bool = True
    keras_version: str | None = None
    extra: dict = field(default_factory=dict)  # keys no field names, kept as they came
    stored: tuple | None = field(default=None, compare=False, repr=False)  # the keys it was read with

    def to_json(self) -> dict:
        """Every field (as the worker has always sent them), or the keys it was read with."""
        return _write(self, always=True, convert={"dense": _layers_json, "other_layers": list})

    @classmethod
    def from_json(cls, d) -> "ModelInfo":
        """From the worker's or a stored dict (``{}``: nothing known); a ``ModelInfo`` as it is."""
        return d if isinstance(d, ModelInfo) else _read(cls, d, {"dense": _layers, "other_layers": tuple})

    @classmethod
    def from_worker(cls, d) -> "ModelInfo":
        """The evaluation worker's info (every field, as ``to_json`` writes it), checked field by field: a
        ``ValueError`` says what is not as the worker writes it."""
        names = tuple(_named(cls))
        _keys(d, names, names, "its info")
        dense = tuple(_dense_layer(layer) for layer in _want(d["dense"], (list, tuple), "its dense layers"))
        return cls(_want(d["inputs"], (int,), "its inputs", none=True),
                   _want(d["outputs"], (int,), "its outputs", none=True), dense,
                   tuple(_want(x, (str,), "a layer's class") for x in _want(d["other_layers"], (list, tuple),
                                                                             "its other layers")),
                   _want(d["parameters"], (int,), "its parameters"), _want(d["finite"], (bool,), "finite"),
                   _want(d["keras_version"], (str,), "its Keras version", none=True))


@dataclass(frozen=True)
class DatasetResult:
    """What the evaluation worker measured of a model on one held-out dataset: its ``metrics`` (``{metric: value}``)
    and the data of its plot (``plot``: arrays; ``{}`` where none is drawn, None when it was not kept)."""

    metrics: dict = field(default_factory=dict)
    plot: dict | None = None
    extra: dict = field(default_factory=dict)  # keys no field names, kept as they came
    stored: tuple | None = field(default=None, compare=False, repr=False)  # the keys it was read with

    def to_json(self) -> dict:
        return _write(self)

    @classmethod
    def from_json(cls, d) -> "DatasetResult":
        """From the worker's or a stored dict; a ``DatasetResult`` as it is."""
        return d if isinstance(d, DatasetResult) else _read(cls, d)

    @classmethod
    def from_worker(cls, d, dataset: str) -> "DatasetResult":
        """The evaluation worker's measurements on ``dataset``, checked: metrics are numbers by name."""
        _keys(d, ("metrics", "plot"), ("metrics",), f"its result on {dataset}")
        metrics = {_want(k, (str,), "a metric's name"): _want(v, (int, float), f"{dataset}'s {k}")
                   for k, v in _want(d["metrics"], (dict,), f"{dataset}'s metrics").items()}
        return cls(metrics, _want(d.get("plot"), (dict,), f"{dataset}'s plot", none=True))


@dataclass(frozen=True)
class Trained:
    """What the training worker did with one recipe (``Evaluator.retrain``): the epochs it trained, and whether
    the fused fit ran them (None: not said)."""

    epochs: int
    fused: bool | None = None

    @classmethod
    def from_worker(cls, d) -> "Trained":
        """The training worker's reply, checked as ``Evaluation.from_worker`` checks the evaluation worker's."""
        _keys(d, ("epochs", "fused"), ("epochs",), "the training worker's reply")
        return cls(_want(d["epochs"], (int,), "its epochs"), _want(d.get("fused"), (bool,), "fused", none=True))


@dataclass
class RetrainingRun:
    """One re-training of a recipe: its seed, the epochs it trained, whether the fused fit ran it (None in
    gradebooks written before it was kept) and its metrics on its tasks' datasets (``{dataset: {metric: value}}``)."""

    seed: int
    epochs: int | None
    fused: bool | None
    metrics: dict

    def to_json(self) -> dict:
        d = {"seed": self.seed, "epochs": self.epochs, "fused": self.fused, "metrics": self.metrics}
        return d if self.fused is not None else {k: v for k, v in d.items() if k != "fused"}

    @classmethod
    def from_json(cls, d: dict) -> "RetrainingRun":
        return cls(d["seed"], d.get("epochs"), d.get("fused"), d.get("metrics", {}))


@dataclass
class Retraining:
    """What re-training one model's recipe did: its tasks, K and pass thresholds it used (``k``, ``passing``),
    each re-training (``RetrainingRun``), and why it stopped early or was refused."""

    tasks: list
    datasets: list = field(default_factory=list)
    runs: list[RetrainingRun] = field(default_factory=list)
    limit: int | None = None
    budget: float | None = None
    k: int | None = None  # what it read: K and the pass thresholds ({task: threshold}); None in older gradebooks
    passing: dict | None = None
    refused: str | None = None
    recipe: str | None = None
    epochs: int | None = None
    trained_epochs: int | None = None
    stopped: str | None = None
    error: str | None = None
    budget_of: str | None = None
    dataset: str | None = None  # older gradebooks: one dataset

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if getattr(self, f.name) is not None or f.name in ("limit", "budget")}
        d["runs"] = [run.to_json() for run in self.runs]
        return d

    @classmethod
    def from_json(cls, d) -> "Retraining":
        if isinstance(d, Retraining):
            return d
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in d.items() if k in known}
        kept["runs"] = [RetrainingRun.from_json(run) for run in d.get("runs", [])]
        return cls(**kept)

    def for_dataset(self, dataset: str) -> bool:
        """Whether its recipe's data may be ``dataset``'s (a record stored before the datasets were kept names
        one, or none: then any)."""
        known = self.datasets or ([self.dataset] if self.dataset else [])
        return not known or dataset in known


@dataclass
class Evaluation:
    """One model's measurements by the evaluation worker, with how it was made (``provenance``, from its
    ``Source``) and, once re-training ran, its recipe's ``Retraining``."""

    format: str | None = None
    info: ModelInfo = field(default_factory=lambda: ModelInfo.from_json({}))
    datasets: dict[str, DatasetResult] = field(default_factory=dict)  # by held-out dataset: what was measured there
    weights_sha256: str | None = None
    weights_sketch: object = None
    preprocessing: dict | None = None
    provenance: Provenance | None = None
    retraining: Retraining | None = None
    extra: dict = field(default_factory=dict)  # anything else the worker said, kept as it came

    def to_json(self) -> dict:
        d = {"format": self.format, "info": self.info.to_json(),
             "datasets": {name: r.to_json() for name, r in self.datasets.items()},
             "weights_sha256": self.weights_sha256, "weights_sketch": self.weights_sketch}
        d = {k: v for k, v in d.items() if v is not None or k in ("info", "datasets")}
        if self.preprocessing is not None:
            d["preprocessing"] = self.preprocessing
        d.update(self.extra)
        d["provenance"] = self.provenance.to_json() if self.provenance is not None else None
        if self.retraining is not None:
            d["retraining"] = self.retraining.to_json()
        return d

    @classmethod
    def from_json(cls, d, provenance: Provenance | dict | None = None) -> "Evaluation":
        """From a stored dict (which carries its provenance and retraining; the keys it lacks are defaults):
        only the gradebook's are read so; the worker's reply is read strictly (``from_worker``)."""
        if isinstance(d, Evaluation):
            return d if provenance is None else replace(d, provenance=Provenance.from_json(provenance))
        named = {"format", "info", "datasets", "weights_sha256", "weights_sketch", "preprocessing", "provenance",
                 "retraining"}
        retraining = d.get("retraining")
        return cls(d.get("format"), ModelInfo.from_json(d.get("info", {})),
                   {name: DatasetResult.from_json(r) for name, r in d.get("datasets", {}).items()},
                   d.get("weights_sha256"), d.get("weights_sketch"), d.get("preprocessing"),
                   Provenance.from_json(provenance if provenance is not None else d.get("provenance")),
                   Retraining.from_json(retraining) if retraining is not None else None,
                   {k: v for k, v in d.items() if k not in named})

    #: what the evaluation worker replies (``evaluate.worker``); the first four always
    WORKER_KEYS = ("format", "info", "datasets", "weights_sha256", "weights_sketch", "preprocessing")

    @classmethod
    def from_worker(cls, d, provenance: Provenance | None = None) -> "Evaluation":
        """The evaluation worker's reply, read once where it crosses into the grader's process, as input it does
        not trust: each part checked and typed (``ModelInfo``, a ``DatasetResult`` per dataset); a reply that is
        not as the worker writes it is a ``ValueError`` that says what is wrong.  ``provenance``: the model's,
        from its ``Source``."""
        _keys(d, cls.WORKER_KEYS, cls.WORKER_KEYS[:4], "the evaluation worker's reply")
        datasets = {_want(name, (str,), "a dataset's name"): DatasetResult.from_worker(r, name)
                    for name, r in _want(d["datasets"], (dict,), "its datasets").items()}
        digest = _want(d["weights_sha256"], (str,), "its weights' hash")
        if len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise ValueError("its weights' hash is not a SHA-256 in hex")
        return cls(_want(d["format"], (str,), "its format"), ModelInfo.from_worker(d["info"]), datasets, digest,
                   _want(d.get("weights_sketch"), (dict,), "its weights' sketch", none=True),
                   _want(d.get("preprocessing"), (dict,), "its preprocessing", none=True),
                   _want(provenance, (Provenance,), "its provenance", none=True))

    @property
    def made_by(self) -> str | None:
        """How the model was made (``Provenance.made_by``: "fit", "predict", "file", "saved"); None unknown."""
        return self.provenance.made_by if self.provenance is not None else None

    def measured_on(self, dataset: str | None) -> DatasetResult:
        """What the worker measured on ``dataset``: an empty ``DatasetResult`` where it measured nothing."""
        return self.datasets.get(dataset) or DatasetResult()

    def own(self) -> "Evaluation":
        """The model's own run: this evaluation without what re-training its recipe gave."""
        return replace(self, retraining=None)


@dataclass
class Source:
    """Where a model came from: a submitted file, or a notebook run."""

    name: str
    format: str
    task_hint: str | None = None
    dataset: str | None = None  # the dataset it was trained on, when a notebook run shows it (the likeliest)
    training: dict | None = None
    preprocessing: dict | None = None  # {"path": the student's scaling file or None}, for tasks that have one
    provenance: Provenance | None = None  # how it was made
    # measuring only, never stored: a captured fit's recipe (``evaluate.retrain.recipe_from_capture``) with
    # ``model_path``, the grader's copy of the model whose architecture a re-training starts from
    recipe: dict | None = None
    # every dataset its training data may come from, likeliest first (``harvest.identify_datasets``); a gradebook
    # written before these were kept has ``dataset`` alone
    datasets: list | None = None

    @property
    def plausible(self) -> list[str]:
        """Every dataset its training data may come from, likeliest first ([] when no notebook run showed it)."""
        return list(self.datasets) if self.datasets else [self.dataset] if self.dataset else []

    def to_json(self) -> dict:
        """What the gradebook keeps of it: its name, format and datasets (no recipe, no training data)."""
        return {"name": self.name, "format": self.format, "task_hint": self.task_hint, "dataset": self.dataset,
                "datasets": self.plausible}

    @classmethod
    def from_json(cls, d: dict, provenance: Provenance | dict | None = None) -> "Source":
        """A stored one (``provenance`` is kept with its ``Evaluation``); one stored before ``datasets`` were kept
        has ``dataset`` alone."""
        return cls(**d, provenance=Provenance.from_json(provenance))


def clean_metrics(metrics: dict) -> dict[str, float]:
    """Finite float metrics only (JSON has no NaN), rounded so reruns print identically."""
    out = {}
    for k, v in sorted(metrics.items()):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(f"{float(v):.10g}")
    return out


@dataclass
class FileResult:
    name: str
    format: str
    # "graded" (a task's model), "unmatched" (a model of no task), "error" (unreadable or refused), "executed"
    # (a notebook or script run), "imported" (a student's module, run by what imports it), "used" (an input
    # scaling file beside its model), "ignored" (not for grading)
    outcome: str
    task: str | None = None
    message: str = ""
    model: str | None = None  # description of the model
    # a model the grader captured from a notebook's run (its name says which cell), not a file the student named
    captured: bool = False

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict) -> "FileResult":
        return cls(**d)


@dataclass
class Measurements:
    """Everything measured of one submission (and what re-training its recipes gave); scoring needs nothing
    else.  ``retrain_key``: what re-training read (``store.keys.retrain_key``); None before it ran or was kept."""

    student_id: str
    files: list  # [FileResult]: notebooks run, unreadable or ignored files
    notes: list[str]
    notebooks: list[dict]
    errors_by_task: dict[str, str]
    evaluated: list  # [(Source, Evaluation)]: every model that loaded, in submission order
    retrain_key: str | None = None
    # each notebook or script as it ran, cells and outputs (``grader.executed.keep``), stored with the rest for
    # the student's page; no part of what is measured (two measurements compare equal without it)
    executed: list = field(default_factory=list, compare=False)

    def to_json(self) -> dict:
        d = {"student_id": self.student_id, "files": [f.to_json() for f in self.files], "notes": self.notes,
             "notebooks": self.notebooks, "errors_by_task": self.errors_by_task,
             "evaluated": [[s.to_json(), e.to_json()] for s, e in self.evaluated]}
        if self.retrain_key is not None:
            d["retrain_key"] = self.retrain_key
        if self.executed:
            d["executed"] = self.executed
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Measurements":
        evaluated = []
        for s, e in d["evaluated"]:
            evaluation = Evaluation.from_json(e)
            evaluated.append((Source.from_json(s, evaluation.provenance), evaluation))
        return cls(d["student_id"], [FileResult.from_json(f) for f in d["files"]], list(d["notes"]),
                   list(d["notebooks"]), dict(d["errors_by_task"]), evaluated, d.get("retrain_key"),
                   list(d.get("executed", [])))


@dataclass
class TaskResult:
    id: str
    title: str
    score: float
    max_score: float
    status: str
    metrics: dict = field(default_factory=dict)
    message: str = ""
    source: str | None = None  # the file that earned it
    inferred: bool = False
    optional: bool = False
    threshold: dict | None = None
    architecture: str | None = None
    plot: dict | None = None  # plot data for the report; not serialised
    dataset: str | None = None

    def to_json(self) -> dict:
        d = {"id": self.id, "title": self.title, "score": self.score, "max_score": self.max_score,
             "status": self.status, "metrics": clean_metrics(self.metrics), "message": self.message,
             "source": self.source, "inferred": self.inferred, "optional": self.optional}
        if self.threshold:
            d["threshold"] = {k: v for k, v in self.threshold.items() if k != "source"} | \
                {"source": self.threshold.get("source")}
        if self.architecture:
            d["architecture"] = self.architecture
        if self.dataset:
            d["dataset"] = self.dataset
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TaskResult":
        return cls(d["id"], d.get("title", d["id"]), d["score"], d["max_score"], d["status"], dict(d["metrics"]),
                   d["message"], d.get("source"), d.get("inferred", False), d.get("optional", False),
                   d.get("threshold"), d.get("architecture"), None, d.get("dataset"))


@dataclass
class StudentResult:
    id: str
    score: float
    max_score: float
    tasks: list[TaskResult]
    files: list[FileResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    notebooks: list[dict] = field(default_factory=list)  # one summary per executed notebook
    grade: str | None = None  # the letter grade, when the assignment has grade bands

    @property
    def fraction(self) -> float:
        return self.score / self.max_score if self.max_score else 0.0

    @property
    def outcome(self) -> str:
        """The student in one word, for progress counts: 'error' when the grader could not grade some
        task, else 'passed' at half the maximum score or more, else 'failed'."""
        if any(t.status == "error" for t in self.tasks):
            return "error"
        return "passed" if self.fraction >= PASS_FRACTION else "failed"

    def to_json(self) -> dict:
        d = {"id": self.id, "score": self.score, "max_score": self.max_score,
             "tasks": [t.to_json() for t in self.tasks], "files": [f.to_json() for f in self.files],
             "notes": list(self.notes), "notebooks": list(self.notebooks)}
        if self.grade is not None:
            d["grade"] = self.grade
        return d

    @classmethod
    def from_json(cls, d: dict) -> "StudentResult":
        return cls(d["id"], d["score"], d["max_score"], [TaskResult.from_json(t) for t in d["tasks"]],
                   [FileResult.from_json(f) for f in d.get("files", [])], list(d.get("notes", [])),
                   list(d.get("notebooks", [])), d.get("grade"))
