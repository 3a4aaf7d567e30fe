"""The config schemas: every key, its type, its default, its one-line meaning (``help``) and, for a
number, the range it takes (``opt(..., ge=, le=)``: ``checks.range_problems`` refuses the others).

Every YAML file under ``configs/`` (the package ``maml_cli.configs``) extends one of these
dataclasses, registered in Hydra's ConfigStore by ``maml_cli.config.store``, so a misspelt key or
a wrong type fails when the config is composed. ``--help`` prints each field's ``help``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

# The largest count or step: JAX holds them as int32 (x64 off), in TrainState.step, the samplers'
# indices and the episode numbers of scoring.
INT32_MAX = 2**31 - 1
# jax.random.PRNGKey keeps a seed's low 32 bits (x64 off: 2**32 draws what 0 draws, -1 what
# 2**32 - 1 draws) and numpy's RandomState takes 0 .. 2**32 - 1: so every seed lies there.
SEED_MAX = 2**32 - 1
# Scores are kept after every inner step of every task ([tasks, inner_steps + 1], and the query
# outputs of a batch of tasks at every step while they are computed).
MAX_INNER_STEPS = 10_000
MAX_EPISODES = 10_000_000
# JAX computes in float32: a larger float becomes inf there.
FLOAT32_MAX = 3.4028234663852886e38
# Sinusoid settings: beyond 1e6, float32 keeps x only to 1/16 and sin(x) is noise.
SINE_LIMIT = 1e6


@dataclass(frozen=True)
class Range:
    """The values a numeric key takes (each element, for a list): ``low`` and ``high`` (None: no
    end), each end closed unless ``low_open``/``high_open``; a float must be finite (and within
    float32) unless ``finite`` is false."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    finite: bool = True

    def problem(self, value) -> str | None:
        """What is wrong with ``value``, worded to follow the key (``must be >= 1``), or None."""
        if isinstance(value, float) and self.finite:
            if math.isnan(value) or math.isinf(value):
                return "must be a finite number"
            if abs(value) > FLOAT32_MAX:
                return f"must be within float32's range, +-{FLOAT32_MAX:.4g}"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return f"must be {'<' if self.high_open else '<='} {_number(self.high)}"
        return None

    def describe(self) -> str:
        """The range as ``--help`` shows it (``>= 1``, ``0..1``); the limits every count shares
        (int32, the seed's 32 bits) are left to the error that names them."""
        high = None if self.high in (INT32_MAX, SEED_MAX) else self.high
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if low is not None and high is not None and not (self.low_open or self.high_open):
            return f"{_number(self.low)}..{_number(high)}"
        up = None if high is None else f"{'<' if self.high_open else '<='} {_number(high)}"
        return ", ".join(p for p in (low, up) if p)


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e16 else f"{bound:g}"


def opt(default, help: str, *, ge=None, gt=None, le=None, lt=None, finite: bool = True):
    """A config field with its one-line meaning (shown by ``--help``) and, for a number (or a list
    of numbers), its allowed range: ``ge``/``gt`` the low end (closed/open), ``le``/``lt`` the
    high end; validation refuses any other value (``checks.range_problems``)."""
    metadata = {"help": help}
    if (ge, gt, le, lt) != (None,) * 4 or not finite:
        if ge is not None and gt is not None or le is not None and lt is not None:
            raise TypeError("give one low end (ge or gt) and one high end (le or lt)")
        metadata["range"] = Range(
            low=gt if gt is not None else ge,
            high=lt if lt is not None else le,
            low_open=gt is not None,
            high_open=lt is not None,
            finite=finite,
        )
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _metadata_of(schema_class, name: str, what: str):
    for cls in schema_class.__mro__:
        f = getattr(cls, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get(what) is not None:
            return f.metadata[what]
    return None


def help_of(schema_class, name: str) -> str:
    """The ``help`` of field ``name``, from the nearest class of ``schema_class``'s MRO that gives one."""
    return _metadata_of(schema_class, name, "help") or ""


def range_of(schema_class, name: str) -> Range | None:
    """The ``Range`` of field ``name``, from the nearest class of ``schema_class``'s MRO that gives one."""
    return _metadata_of(schema_class, name, "range")


# The ranges most keys share.
COUNT = {"ge": 1, "le": INT32_MAX}  # how many of something, at least one
STEPS = {"ge": 0, "le": INT32_MAX}  # how many, possibly none
SEED = {"ge": 0, "le": SEED_MAX}
INNER_STEPS = {"ge": 0, "le": MAX_INNER_STEPS}
RATE = {"ge": 0}  # a step size; finite
POSITIVE = {"gt": 0}
SINE = {"ge": -SINE_LIMIT, "le": SINE_LIMIT}


# --- dataset -------------------------------------------------------------------------------------


@dataclass
class DatasetConfig:
    name: str = opt(MISSING, "which dataset (set by dataset=NAME)")
    ways: int = opt(1, "classes per task (1 for regression)", **COUNT)
    shots: int = opt(1, "support examples per class (for sinusoid: the K points)", **COUNT)
    query_shots: int = opt(1, "query examples per class", **COUNT)
    path: Optional[str] = opt(None, "where the data lives (unused by sinusoid)")


@dataclass
class SinusoidConfig(DatasetConfig):
    """Finn et al. (2017), section 5.1: y = A sin(x - phase) with A, phase and x drawn uniformly."""

    name: str = "sinusoid"
    shots: int = 10
    query_shots: int = 10
    amplitude_min: float = opt(0.1, "A is drawn uniformly from [amplitude_min, amplitude_max]", **SINE)
    amplitude_max: float = opt(5.0, "upper end of A", **SINE)
    phase_min: float = opt(0.0, "the phase is drawn uniformly from [phase_min, phase_max]", **SINE)
    phase_max: float = opt(math.pi, "upper end of the phase", **SINE)
    x_min: float = opt(-5.0, "inputs x are drawn uniformly from [x_min, x_max]", **SINE)
    x_max: float = opt(5.0, "upper end of x", **SINE)


@dataclass
class OmniglotConfig(DatasetConfig):
    """Lake et al. (2015), 1623 characters x 20 drawers; tasks as in Finn et al. (2017), 5.2."""

    name: str = "omniglot"
    ways: int = 5
    shots: int = 1
    query_shots: int = 1
    data_dir: Optional[str] = opt(None, "TFDS data_dir when path is unset (default ~/tensorflow_datasets)")
    cache_dir: Optional[str] = opt(None, "preprocessed arrays (default $MAML_CLI_CACHE or ~/.cache/maml-cli)")
    image_size: int = opt(28, "image side after resizing (105 -> 28 in the papers)", **COUNT)
    resample: str = opt("lanczos", "lanczos (grey strokes) | nearest (binary, as the MAML code's Pillow did)")
    split: str = opt("paper", "paper: all characters pooled, split at random | official: background/evaluation")
    split_seed: int = opt(1, "paper split: the seed of the random character split", **SEED)
    train_classes: int = opt(1200, "paper split: meta-train characters, meta-validation included", **COUNT)
    val_classes: int = opt(100, "meta-validation characters, taken from the meta-train ones", **STEPS)
    rotate: bool = opt(True, "rotate each class of a task by a random multiple of 90 degrees")


@dataclass
class MiniImageNetConfig(DatasetConfig):
    """Vinyals et al. (2016) with Ravi & Larochelle's 64/16/20 class split; images from the user."""

    name: str = "miniimagenet"
    ways: int = 5
    shots: int = 1
    query_shots: int = 15
    cache_dir: Optional[str] = opt(None, "preprocessed arrays (default $MAML_CLI_CACHE or ~/.cache/maml-cli)")
    image_size: int = opt(84, "image side after resizing", **COUNT)
    images_per_class: Optional[int] = opt(
        None, "images every class must hold (null: the same number, 600 in the real set)", **COUNT
    )


@dataclass
class ImageFolderConfig(DatasetConfig):
    """Your own images, one folder per class: ROOT/<class>/<image> (classes split at random) or
    ROOT/{train,val,test}/<class>/<image> (the split is the folders')."""

    name: str = "image_folder"
    ways: int = 5
    shots: int = 1
    query_shots: int = 1
    layout: str = opt("auto", "auto | classes (ROOT/<class>, split at random) | splits (ROOT/train|val|test/<class>)")
    train_classes: float = opt(
        0.6, "layout=classes: meta-train classes, a count or (below 1) a fraction", ge=0, le=INT32_MAX
    )
    val_classes: float = opt(
        0.2, "layout=classes: meta-validation classes (the rest are the test split)", ge=0, le=INT32_MAX
    )
    split_seed: int = opt(0, "layout=classes: the seed of the random class split", **SEED)
    image_size: int = opt(84, "image side after resizing (images of any size and shape are resized to it)", **COUNT)
    channels: Optional[int] = opt(
        None, "1 (grey) | 3 (RGB): convert every image; null: as the files are (all alike)", ge=1, le=3
    )
    invert: bool = opt(False, "invert the pixels (dark ink on white -> bright on black, as Omniglot is stored)")
    resample: str = opt("lanczos", "lanczos | bilinear | nearest: the resizing filter")
    rotate: bool = opt(False, "rotate each class of a task by a random multiple of 90 degrees")
    cache_dir: Optional[str] = opt(None, "decoded arrays (default $MAML_CLI_CACHE or ~/.cache/maml-cli)")


@dataclass
class FunctionTasksConfig(DatasetConfig):
    """Your own regression task family (docs/custom.md): ``target(key, num_points, **kwargs) -> (x, y)``
    draws the points of one task, x [num_points, inputs] and y [num_points, outputs], under jit."""

    name: str = "function"
    target: str = opt(MISSING, "module.path:function that draws one task's points (key, num_points) -> (x, y)")
    kwargs: Dict[str, Any] = opt({}, "keyword arguments passed to the target on every call")
    shots: int = 10
    query_shots: int = 10


# --- model ---------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    name: str = opt(MISSING, "which network (set by model=NAME)")


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    hidden_sizes: List[int] = opt([40, 40], "widths of the hidden layers", **COUNT)
    activation: str = opt("relu", "relu | tanh | gelu")


@dataclass
class Conv4Config(ModelConfig):
    name: str = "conv4"
    filters: int = opt(64, "channels of each of the four conv blocks", **COUNT)
    downsample: str = opt("stride", "stride (Omniglot) | maxpool (MiniImageNet)")
    head: str = opt("mean", "mean over space (Omniglot) | flatten (MiniImageNet)")
    batch_norm: str = opt("transductive", "transductive (batch statistics, always) | per_step (MAML++) | none")
    activation: str = opt("relu", "relu | leaky_relu (MAML++'s code, slope 0.01)")
    bn_scale: bool = opt(True, "learn a batch-norm scale (the original MAML code: offset only)")
    bn_epsilon: float = opt(1e-5, "batch-norm epsilon (the original MAML code: 1e-3)", **POSITIVE)
    adapt_batch_norm: bool = opt(True, "the inner loop adapts batch-norm scale/offset (original MAML, MAML++: no)")
    bn_momentum: float = opt(
        0.1, "per_step: weight of each outer step's batch statistics in the running ones", gt=0, le=1
    )
    bn_eval_stats: str = opt(
        "batch",
        "per_step: evaluation normalises with the batch (as the MAML++ authors' code) "
        "or the running statistics (as the method is described; it fails on Omniglot 5w1s)",
    )
    conv_impl: str = opt(
        "auto", "auto | im2col | lax | lax_vjp (stride 1 only): how convolutions are computed (same results)"
    )


@dataclass
class CustomModelConfig(ModelConfig):
    """Your own flax.linen Module (docs/custom.md): ``target(output_dim=N, **kwargs)`` returns it."""

    name: str = "custom"
    target: str = opt(MISSING, "module.path:callable returning a flax.linen Module, called with output_dim=N")
    kwargs: Dict[str, Any] = opt({}, "keyword arguments passed to the target besides output_dim")


# --- algorithm -----------------------------------------------------------------------------------


@dataclass
class AlgorithmConfig:
    """MAML, FOMAML (first_order), ANIL: these keys only."""

    name: str = opt("maml", "which algorithm (set by algorithm=NAME)")
    inner_lr: float = opt(0.01, "step size of the inner (adaptation) SGD steps", **RATE)
    inner_steps: int = opt(1, "inner steps taken during meta-training", **INNER_STEPS)
    first_order: bool = opt(False, "true: drop second-order terms (FOMAML)")


@dataclass
class MetaSGDConfig(AlgorithmConfig):
    """Li et al. (2017): a learned step size per parameter entry."""

    name: str = "metasgd"
    lr_init_range: Optional[List[float]] = opt(
        None, "[low, high]: rates start uniform in it (null: all at inner_lr)", **RATE
    )


@dataclass
class MAMLPlusPlusConfig(AlgorithmConfig):
    """Antoniou et al. (2019); defaults from the authors' Omniglot configs."""

    name: str = "mamlpp"
    inner_lr: float = opt(0.1, "initial value of the learned per-layer per-step step sizes")
    inner_steps: int = 5
    multi_step_loss: bool = opt(True, "query loss after every inner step, annealed towards the last")
    multi_step_loss_steps: int = opt(5000, "outer steps of the multi-step loss (then the last step only)", **STEPS)
    learn_inner_lr: bool = opt(True, "learned per-layer per-step inner step sizes")
    first_order_steps: int = opt(0, "derivative-order annealing: first order for this many outer steps", **STEPS)
    cosine_annealing: bool = opt(True, "cosine-anneal the outer learning rate over train.steps")
    min_outer_lr: float = opt(1e-5, "where the cosine ends", **RATE)


@dataclass
class ReptileConfig(AlgorithmConfig):
    """Nichol et al. (2018): inner Adam on mini-batches, outer step towards the adapted weights."""

    name: str = "reptile"
    inner_lr: float = opt(0.001, "the inner Adam's learning rate")
    inner_steps: int = opt(5, "inner Adam steps (mini-batches) per task in meta-training")
    first_order: bool = opt(True, "Reptile is first order by construction")
    inner_batch_size: int = opt(10, "examples per inner mini-batch in meta-training", **COUNT)
    train_shots: Optional[int] = opt(None, "examples per class of a meta-training task (null: dataset.shots)", **COUNT)
    eval_inner_batch_size: int = opt(10, "examples per inner mini-batch when evaluating", **COUNT)
    outer_step_size: float = opt(1.0, "interpolation towards the mean adapted weights, at the start", **POSITIVE)
    outer_step_size_final: float = opt(0.0, "... and at train.steps (linear in between)", **RATE)
    transductive: bool = opt(
        True, "query images scored together (batch norm over them); false: each with the support set"
    )


GRAD_CLIP_SCOPES = ("all", "model")


# --- training loop and evaluation ----------------------------------------------------------------


@dataclass
class TrainLoopConfig:
    steps: int = opt(70_000, "outer (meta) iterations (the MAML paper's sinusoid length)", **STEPS)
    meta_batch_size: int = opt(25, "tasks per outer step", **COUNT)
    outer_lr: float = opt(1e-3, "Adam learning rate of the outer loop", **POSITIVE)
    grad_clip: Optional[float] = opt(None, "clip the meta-gradient by global norm (null: no clipping)", **POSITIVE)
    grad_clip_value: Optional[float] = opt(
        None, "clip each meta-gradient entry to [-v, v] (original MAML code: 10)", **POSITIVE
    )
    grad_clip_scope: str = opt("all", "all | model: clip every meta-parameter, or the network's alone (MAML++'s code)")
    log_every: int = opt(100, "write train/* metrics every this many steps", **COUNT)
    eval_every: int = opt(1_000, "evaluate on val tasks every this many steps", **COUNT)
    checkpoint_every: int = opt(1_000, "save a checkpoint every this many steps (and at the end)", **COUNT)
    keep_checkpoints: int = opt(3, "how many recent checkpoints to keep", **COUNT)
    keep_best: int = opt(
        5, "also keep the checkpoints of the N best validations (maml-eval checkpoint=best:N)", **STEPS
    )
    steps_per_call: int = opt(100, "outer steps fused into one jitted call (lax.scan)", **COUNT)
    task_batching: str = opt("auto", "how a meta-batch is mapped over tasks: auto | vmap | map | unroll")
    remat: Optional[bool] = opt(None, "recompute inner-loop activations in the backward pass (null: auto)")
    devices: str = opt(
        "auto", "devices the meta-batch is split over: auto (all; on CPU, the cores for conv4) | N; 1 shards nothing"
    )
    time_limit_minutes: Optional[float] = opt(
        None, "stop with a checkpoint after this long (rerun to continue)", **POSITIVE
    )
    progress: bool = opt(True, "show a progress bar (only when stderr is a terminal)")
    plots: bool = opt(
        True, "draw plots/learning_curves.png at each validation, plots/adaptation.png (regression) at the end"
    )
    dry_run: bool = opt(False, "compose, validate, check the data, print config and plan; train nothing")
    force_run_dir: bool = opt(
        False, "train in hydra.run.dir even if it is / or your home folder, or holds files that are not a run's"
    )


@dataclass
class EvalConfig:
    episodes: int = opt(600, "test tasks evaluated by maml-eval", ge=1, le=MAX_EPISODES)
    inner_steps: int = opt(10, "inner steps at test time; metrics reported after each of 0..inner_steps", **INNER_STEPS)
    val_episodes: int = opt(100, "tasks evaluated at each train.eval_every during training", ge=1, le=MAX_EPISODES)
    seed: int = opt(0, "fixed, so every checkpoint is scored on the same tasks", **SEED)
    batch_size: int = opt(100, "episodes evaluated per jitted call (does not change which tasks)", **COUNT)
    query_shots: Optional[int] = opt(
        None, "query examples per class of evaluation tasks (null: dataset.query_shots)", **COUNT
    )


@dataclass
class DistributedConfig:
    """One training over several processes (jax.distributed). Under SLURM's srun all three are
    read from the environment; elsewhere give all three to every process."""

    coordinator: Optional[str] = opt(None, "HOST:PORT of process 0 (null: SLURM's, or one process)")
    num_processes: Optional[int] = opt(None, "processes in the run (null: SLURM's, or 1)", **COUNT)
    process_id: Optional[int] = opt(
        None, "this process's rank, 0..num_processes-1 (null: SLURM's, or 0)", ge=0, le=INT32_MAX - 1
    )


# --- experiment trackers (logger=NAME) -------------------------------------------------------------


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.jsonl (always written): logger=tensorboard|csv|wandb|mlflow|none."""

    name: str = opt("tensorboard", "which tracker (set by logger=NAME)")


@dataclass
class WandbLoggerConfig(LoggerConfig):
    name: str = "wandb"
    project: str = opt("maml-cli", "the W&B project")
    entity: Optional[str] = opt(None, "the W&B team or user (null: your default)")
    mode: str = opt("offline", "offline (files in RUN_DIR/wandb, wandb sync uploads them) | online | disabled")


@dataclass
class MLflowLoggerConfig(LoggerConfig):
    name: str = "mlflow"
    experiment: str = opt("maml-cli", "the MLflow experiment")
    tracking_uri: Optional[str] = opt(
        None, "the MLflow tracking URI (null: sqlite:///RUN_DIR/mlflow.db, a local store)"
    )


@dataclass
class TrainConfig:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    algorithm: AlgorithmConfig = MISSING
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = opt(0, "initialisation and meta-training tasks", **SEED)


# --- maml-eval -----------------------------------------------------------------------------------


@dataclass
class EvalOverrides:
    """Values here replace the run's own ``eval.*`` settings; null keeps the run's."""

    episodes: Optional[int] = opt(None, "test tasks (the run's eval.episodes: 600 by default)", ge=1, le=MAX_EPISODES)
    inner_steps: Optional[int] = opt(None, "inner steps; the metric is reported after each of 0..N", **INNER_STEPS)
    seed: Optional[int] = opt(None, "which tasks are scored", **SEED)
    batch_size: Optional[int] = opt(None, "tasks per jitted call (speed only)", **COUNT)
    query_shots: Optional[int] = opt(None, "query examples per class of a test task", **COUNT)


@dataclass
class EvalDatasetOverrides:
    """Where the run's data is now, when it moved since training (null keeps the run's). With
    dataset=NAME instead, the run is scored on tasks of that dataset (cross-domain evaluation)."""

    path: Optional[str] = opt(None, "the dataset's folder (dataset.path of the run)")
    data_dir: Optional[str] = opt(None, "TFDS data_dir (Omniglot without dataset.path)")
    cache_dir: Optional[str] = opt(None, "where preprocessed arrays are cached")


@dataclass
class EvalAppConfig:
    run_dir: str = opt(MISSING, "a maml-train run directory (required)")
    checkpoint: Optional[str] = opt(None, "STEP | latest | best (best validation) | best:N (ensemble of the N best)")
    split: str = opt("test", "test | val | train")
    devices: str = opt("auto", "devices the episodes are split over: auto (all) | N (the first N)")
    output: Optional[str] = opt(
        None, "the record's file, a .png beside it (null: RUN_DIR/eval.json, or eval_NAME.json)"
    )
    transductive: Optional[bool] = opt(
        None, "Reptile: score the query images together (true) or each with the support set"
    )
    eval: EvalOverrides = field(default_factory=EvalOverrides)
    # The run's own data (where it is now), or with dataset=NAME another dataset's tasks; the
    # group's schema checks the keys (EvalDatasetOverrides, or that dataset's).
    dataset: Any = opt(None, "where the run's data is now, or with dataset=NAME the dataset to score it on")
    progress: bool = opt(True, "show a progress bar (only when stderr is a terminal)")
    trust_code: bool = opt(False, "import the code the run's config names (model.target, dataset.target)")


# --- maml-adapt ----------------------------------------------------------------------------------


@dataclass
class AdaptAppConfig:
    run_dir: str = opt(MISSING, "a maml-train run directory (required)")
    support: str = opt(
        MISSING, "classification: a folder with one folder of images per class; regression: a CSV of x,y"
    )
    query: str = opt(
        MISSING,
        "images to predict (a folder, class folders to score, or one file); regression: CSV of x or START:STOP:NUM",
    )
    checkpoint: Optional[str] = opt(None, "STEP | latest | best (the best validation); null: the latest")
    inner_steps: Optional[int] = opt(None, "adaptation steps (null: the run's eval.inner_steps)", **INNER_STEPS)
    out_dir: str = opt(".", "where predictions.csv, predictions.json (and adapted.png for regression) go")
    save_adapted: Optional[str] = opt(None, "also save the adapted parameters to this .npz file")
    invert: Optional[bool] = opt(
        None, "invert pixels (dark ink on white -> bright on black; null: as the run's data was read)"
    )
    allow_single_query: bool = opt(False, "predict one query image alone with transductive batch norm (unreliable)")
    seed: int = opt(0, "randomness of the adaptation (Reptile's mini-batches)", **SEED)
    trust_code: bool = opt(False, "import the code the run's config names (model.target, dataset.target)")


DATASET_SCHEMAS = {
    "sinusoid": SinusoidConfig,
    "omniglot": OmniglotConfig,
    "miniimagenet": MiniImageNetConfig,
    "image_folder": ImageFolderConfig,
    "function": FunctionTasksConfig,
}
MODEL_SCHEMAS = {"mlp": MLPConfig, "conv4": Conv4Config, "custom": CustomModelConfig}
ALGORITHM_SCHEMAS = {
    "maml": AlgorithmConfig,
    "fomaml": AlgorithmConfig,
    "anil": AlgorithmConfig,
    "metasgd": MetaSGDConfig,
    "mamlpp": MAMLPlusPlusConfig,
    "reptile": ReptileConfig,
}
LOGGER_SCHEMAS = {
    "tensorboard": LoggerConfig,
    "csv": LoggerConfig,
    "none": LoggerConfig,
    "wandb": WandbLoggerConfig,
    "mlflow": MLflowLoggerConfig,
}
TASK_BATCHING = ("auto", "vmap", "map", "unroll")  # auto: see maml_cli/backend/plan.py
SPLITS = ("train", "val", "test")


IMAGE_FOLDER_LAYOUTS = ("auto", "classes", "splits")  # dataset.layout of dataset=image_folder
IMAGE_RESAMPLE = ("lanczos", "bilinear", "nearest")  # dataset.resample of dataset=image_folder (Pillow's filters)
REGRESSION_DATASETS = ("sinusoid", "function")  # scored by mse (lower is better); the others by accuracy


def metric_direction(dataset_name: str) -> str:
    """How a search optimises a dataset's validation metric (``${metric_direction:...}``)."""
    return "minimize" if dataset_name in REGRESSION_DATASETS else "maximize"
