"""Config schemas: the one home of defaults and types.

Every YAML file under ``configs/`` extends one of these dataclasses (registered in Hydra's
ConfigStore), so a misspelt key or a wrong type fails when the config is composed, before any
data is read or anything is compiled. ``validate`` then checks what types cannot: that the
numbers make sense together.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class UserError(Exception):
    """Bad input from the user: reported as one clear message and a non-zero exit, no traceback."""


def nearest(word: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate ``word`` was most likely meant to be, or None."""
    candidates = list(candidates)
    leaf = word.rsplit(".", 1)[-1]
    close = [c for c in candidates if "." in c and c.rsplit(".", 1)[-1] == leaf and c != word]  # wrong section
    # A key of a section (train.steps) is not a misspelt top-level key (transductive), nor the reverse.
    same_depth = [c for c in candidates if c.count(".") == word.count(".")]
    close = close or difflib.get_close_matches(word, same_depth, n=1, cutoff=0.6)
    if not close:  # a misspelling under the wrong section: compare the last parts
        last = {c.rsplit(".", 1)[-1]: c for c in candidates}
        hit = difflib.get_close_matches(leaf, list(last), n=1, cutoff=0.75)
        close = [last[hit[0]]] if hit else []
    return close[0] if close else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the candidate nearest to ``word``, or ""."""
    hit = nearest(word, candidates)
    return f" (did you mean {hit}?)" if hit else ""


def one_of(key: str, value, allowed) -> str:
    """The message for a value outside ``allowed``."""
    hit = nearest(str(value), allowed)
    return f"{key} must be one of {', '.join(allowed)} (got {value!r}" + (f"; did you mean {hit}?)" if hit else ")")


# --- dataset -------------------------------------------------------------------------------------


@dataclass
class DatasetConfig:
    name: str = MISSING  # which dataset (set by dataset=NAME)
    ways: int = 1  # classes per task (1 for regression)
    shots: int = 1  # support examples per class (for sinusoid: the K points)
    query_shots: int = 1  # query examples per class
    path: Optional[str] = None  # where the data lives (unused by sinusoid)


@dataclass
class SinusoidConfig(DatasetConfig):
    """Finn et al. (2017), section 5.1: y = A sin(x - phase) with A, phase and x drawn uniformly."""

    name: str = "sinusoid"
    shots: int = 10
    query_shots: int = 10
    amplitude_min: float = 0.1  # A is drawn uniformly from [amplitude_min, amplitude_max]
    amplitude_max: float = 5.0  # upper end of A
    phase_min: float = 0.0  # the phase is drawn uniformly from [phase_min, phase_max]
    phase_max: float = math.pi  # upper end of the phase
    x_min: float = -5.0  # inputs x are drawn uniformly from [x_min, x_max]
    x_max: float = 5.0  # upper end of x


@dataclass
class OmniglotConfig(DatasetConfig):
    """Lake et al. (2015), 1623 characters x 20 drawers; tasks as in Finn et al. (2017), 5.2."""

    name: str = "omniglot"
    ways: int = 5
    shots: int = 1
    query_shots: int = 1
    data_dir: Optional[str] = None  # TFDS data_dir when path is unset (default ~/tensorflow_datasets)
    cache_dir: Optional[str] = None  # preprocessed arrays (default $MAML_CLI_CACHE or ~/.cache/maml-cli)
    image_size: int = 28  # image side after resizing (105 -> 28 in the papers)
    resample: str = "lanczos"  # lanczos (grey strokes) | nearest (binary, as the MAML code's Pillow did)
    split: str = "paper"  # paper: all characters pooled, split at random | official: background/evaluation
    split_seed: int = 1  # paper split: the seed of the random character split
    train_classes: int = 1200  # paper split: meta-train characters, meta-validation included
    val_classes: int = 100  # meta-validation characters, taken from the meta-train ones
    rotate: bool = True  # rotate each class of a task by a random multiple of 90 degrees


@dataclass
class MiniImageNetConfig(DatasetConfig):
    """Vinyals et al. (2016) with Ravi & Larochelle's 64/16/20 class split; images from the user."""

    name: str = "miniimagenet"
    ways: int = 5
    shots: int = 1
    query_shots: int = 15
    cache_dir: Optional[str] = None  # preprocessed arrays (default $MAML_CLI_CACHE or ~/.cache/maml-cli)
    image_size: int = 84  # image side after resizing
    images_per_class: Optional[int] = None  # images every class must hold (null: the same number, 600 in the real set)


@dataclass
class ImageFolderConfig(DatasetConfig):
    """Your own images, one folder per class: ROOT/<class>/<image> (classes split at random) or
    ROOT/{train,val,test}/<class>/<image> (the split is the folders')."""

    name: str = "image_folder"
    ways: int = 5
    shots: int = 1
    query_shots: int = 1
    layout: str = "auto"  # auto | classes (ROOT/<class>, split at random) | splits (ROOT/train|val|test/<class>)
    train_classes: float = 0.6  # layout=classes: meta-train classes, a count or (below 1) a fraction
    val_classes: float = 0.2  # layout=classes: meta-validation classes (the rest are the test split)
    split_seed: int = 0  # layout=classes: the seed of the random class split
    image_size: int = 84  # image side after resizing (images of any size and shape are resized to it)
    channels: Optional[int] = None  # 1 (grey) | 3 (RGB): convert every image; null: as the files are (all alike)
    invert: bool = False  # invert the pixels (dark ink on white -> bright on black, as Omniglot is stored)
    resample: str = "lanczos"  # lanczos | bilinear | nearest: the resizing filter
    rotate: bool = False  # rotate each class of a task by a random multiple of 90 degrees
    cache_dir: Optional[str] = None  # decoded arrays (default $MAML_CLI_CACHE or ~/.cache/maml-cli)


# --- model ---------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    name: str = MISSING  # which network (set by model=NAME)


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    hidden_sizes: List[int] = field(default_factory=lambda: [40, 40])  # widths of the hidden layers
    activation: str = "relu"  # relu | tanh | gelu


@dataclass
class Conv4Config(ModelConfig):
    name: str = "conv4"
    filters: int = 64  # channels of each of the four conv blocks
    downsample: str = "stride"  # stride (Omniglot) | maxpool (MiniImageNet)
    head: str = "mean"  # mean over space (Omniglot) | flatten (MiniImageNet)
    batch_norm: str = "transductive"  # transductive (batch statistics, always) | per_step (MAML++) | none
    activation: str = "relu"  # relu | leaky_relu (MAML++'s code, slope 0.01)
    bn_scale: bool = True  # learn a batch-norm scale (the original MAML code: offset only)
    bn_epsilon: float = 1e-5  # batch-norm epsilon (the original MAML code: 1e-3)
    adapt_batch_norm: bool = True  # the inner loop adapts batch-norm scale/offset (original MAML, MAML++: no)
    bn_momentum: float = 0.1  # per_step: weight of each outer step's batch statistics in the running ones
    # per_step: evaluation normalises with the batch (as the MAML++ authors' code) or the running
    # statistics (as the method is described; scripts/bn_eval_stats.py: it fails on Omniglot 5w1s)
    bn_eval_stats: str = "batch"
    conv_impl: str = "auto"  # auto | im2col | lax: how convolutions are computed (same results)


# --- algorithm -----------------------------------------------------------------------------------


@dataclass
class AlgorithmConfig:
    """MAML, FOMAML (first_order), ANIL: these keys only."""

    name: str = "maml"  # which algorithm (set by algorithm=NAME)
    inner_lr: float = 0.01  # step size of the inner (adaptation) SGD steps
    inner_steps: int = 1  # inner steps taken during meta-training
    first_order: bool = False  # true: drop second-order terms (FOMAML)


@dataclass
class MetaSGDConfig(AlgorithmConfig):
    """Li et al. (2017): a learned step size per parameter entry."""

    name: str = "metasgd"
    lr_init_range: Optional[List[float]] = None  # [low, high]: rates start uniform in it (null: all at inner_lr)


@dataclass
class MAMLPlusPlusConfig(AlgorithmConfig):
    """Antoniou et al. (2019); defaults from the authors' Omniglot configs."""

    name: str = "mamlpp"
    inner_lr: float = 0.1  # initial value of the learned per-layer per-step step sizes
    inner_steps: int = 5
    multi_step_loss: bool = True  # query loss after every inner step, annealed towards the last
    multi_step_loss_steps: int = 5000  # outer steps of the multi-step loss (then the last step only)
    learn_inner_lr: bool = True  # learned per-layer per-step inner step sizes
    first_order_steps: int = 0  # derivative-order annealing: first order for this many outer steps
    cosine_annealing: bool = True  # cosine-anneal the outer learning rate over train.steps
    min_outer_lr: float = 1e-5  # where the cosine ends


@dataclass
class ReptileConfig(AlgorithmConfig):
    """Nichol et al. (2018): inner Adam on mini-batches, outer step towards the adapted weights."""

    name: str = "reptile"
    inner_lr: float = 0.001  # the inner Adam's learning rate
    inner_steps: int = 5  # inner Adam steps (mini-batches) per task in meta-training
    first_order: bool = True  # Reptile is first order by construction
    inner_batch_size: int = 10  # examples per inner mini-batch in meta-training
    train_shots: Optional[int] = None  # examples per class of a meta-training task (null: dataset.shots)
    eval_inner_batch_size: int = 10  # examples per inner mini-batch when evaluating
    outer_step_size: float = 1.0  # interpolation towards the mean adapted weights, at the start
    outer_step_size_final: float = 0.0  # ... and at train.steps (linear in between)
    transductive: bool = True  # query images scored together (batch norm over them); false: each with the support set


GRAD_CLIP_SCOPES = ("all", "model")


# --- training loop and evaluation ----------------------------------------------------------------


@dataclass
class TrainLoopConfig:
    steps: int = 70_000  # outer (meta) iterations (the MAML paper's sinusoid length)
    meta_batch_size: int = 25  # tasks per outer step
    outer_lr: float = 1e-3  # Adam learning rate of the outer loop
    grad_clip: Optional[float] = None  # clip the meta-gradient by global norm (null: no clipping)
    grad_clip_value: Optional[float] = None  # clip each meta-gradient entry to [-v, v] (original MAML code: 10)
    grad_clip_scope: str = "all"  # all | model: clip every meta-parameter, or the network's alone (MAML++'s code)
    log_every: int = 100  # write train/* metrics every this many steps
    eval_every: int = 1_000  # evaluate on val tasks every this many steps
    checkpoint_every: int = 1_000  # save a checkpoint every this many steps (and at the end)
    keep_checkpoints: int = 3  # how many recent checkpoints to keep
    keep_best: int = 5  # also keep the checkpoints of the N best validations (maml-eval checkpoint=best:N)
    steps_per_call: int = 100  # outer steps fused into one jitted call (lax.scan)
    task_batching: str = "auto"  # how a meta-batch is mapped over tasks: auto | vmap | map | unroll
    remat: Optional[bool] = None  # recompute inner-loop activations in the backward pass (null: auto)
    devices: str = "auto"  # devices the meta-batch is split over: auto (all; on CPU, the cores for conv4) | N; 1 shards nothing
    time_limit_minutes: Optional[float] = None  # stop with a checkpoint after this long (rerun to continue)
    progress: bool = True  # show a progress bar (only when stderr is a terminal)
    plots: bool = True  # draw plots/learning_curves.png at each validation, plots/adaptation.png (regression) at the end
    dry_run: bool = False  # compose, validate, check the data, print config and plan; train nothing


@dataclass
class EvalConfig:
    episodes: int = 600  # test tasks evaluated by maml-eval
    inner_steps: int = 10  # inner steps at test time; metrics reported after each of 0..inner_steps
    val_episodes: int = 100  # tasks evaluated at each train.eval_every during training
    seed: int = 0  # fixed, so every checkpoint is scored on the same tasks
    batch_size: int = 100  # episodes evaluated per jitted call (does not change which tasks)
    query_shots: Optional[int] = None  # query examples per class of evaluation tasks (null: dataset.query_shots)


@dataclass
class DistributedConfig:
    """One training over several processes (jax.distributed). Under SLURM's srun all three are
    read from the environment; elsewhere give all three to every process."""

    coordinator: Optional[str] = None  # HOST:PORT of process 0 (null: SLURM's, or one process)
    num_processes: Optional[int] = None  # processes in the run (null: SLURM's, or 1)
    process_id: Optional[int] = None  # this process's rank, 0..num_processes-1 (null: SLURM's, or 0)


@dataclass
class TrainConfig:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    algorithm: AlgorithmConfig = MISSING
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    seed: int = 0  # initialisation and meta-training tasks


# --- maml-eval -----------------------------------------------------------------------------------


@dataclass
class EvalOverrides:
    """Values here replace the run's own ``eval.*`` settings; null keeps the run's."""

    episodes: Optional[int] = None  # test tasks (the run's eval.episodes: 600 by default)
    inner_steps: Optional[int] = None  # inner steps; the metric is reported after each of 0..N
    seed: Optional[int] = None  # which tasks are scored
    batch_size: Optional[int] = None  # tasks per jitted call (speed only)
    query_shots: Optional[int] = None  # query examples per class of a test task


@dataclass
class EvalDatasetOverrides:
    """Where the run's data is now, when it moved since training (null keeps the run's). With
    dataset=NAME instead, the run is scored on tasks of that dataset (cross-domain evaluation)."""

    path: Optional[str] = None  # the dataset's folder (dataset.path of the run)
    data_dir: Optional[str] = None  # TFDS data_dir (Omniglot without dataset.path)
    cache_dir: Optional[str] = None  # where preprocessed arrays are cached


@dataclass
class EvalAppConfig:
    run_dir: str = MISSING  # a maml-train run directory (required)
    checkpoint: Optional[str] = None  # STEP | latest | best (best validation) | best:N (ensemble of the N best)
    split: str = "test"  # test | val | train
    devices: str = "auto"  # devices the episodes are split over: auto (all) | N (the first N)
    output: Optional[str] = None  # the record's file, a .png beside it (null: RUN_DIR/eval.json, or eval_NAME.json)
    transductive: Optional[bool] = None  # Reptile: score the query images together (true) or each with the support set
    eval: EvalOverrides = field(default_factory=EvalOverrides)
    # The run's own data (where it is now), or with dataset=NAME another dataset's tasks; the
    # group's schema checks the keys (EvalDatasetOverrides, or that dataset's).
    dataset: Any = None
    progress: bool = True  # show a progress bar (only when stderr is a terminal)


# --- maml-adapt ----------------------------------------------------------------------------------


@dataclass
class AdaptAppConfig:
    run_dir: str = MISSING  # a maml-train run directory (required)
    support: str = MISSING  # classification: a folder with one folder of images per class; regression: a CSV of x,y
    query: str = MISSING  # images to predict (a folder, class folders to score, or one file); regression: CSV of x or START:STOP:NUM
    checkpoint: Optional[str] = None  # STEP | latest | best (the best validation); null: the latest
    inner_steps: Optional[int] = None  # adaptation steps (null: the run's eval.inner_steps)
    out_dir: str = "."  # where predictions.csv, predictions.json (and adapted.png for regression) go
    save_adapted: Optional[str] = None  # also save the adapted parameters to this .npz file
    invert: Optional[bool] = None  # invert pixels (dark ink on white -> bright on black; null: as the run's data was read)
    allow_single_query: bool = False  # predict one query image alone with transductive batch norm (unreliable)
    seed: int = 0  # randomness of the adaptation (Reptile's mini-batches)


DATASET_SCHEMAS = {"sinusoid": SinusoidConfig, "omniglot": OmniglotConfig, "miniimagenet": MiniImageNetConfig,
                   "image_folder": ImageFolderConfig}
MODEL_SCHEMAS = {"mlp": MLPConfig, "conv4": Conv4Config}
ALGORITHM_SCHEMAS = {"maml": AlgorithmConfig, "fomaml": AlgorithmConfig, "anil": AlgorithmConfig,
                     "metasgd": MetaSGDConfig, "mamlpp": MAMLPlusPlusConfig, "reptile": ReptileConfig}
TASK_BATCHING = ("auto", "vmap", "map", "unroll")  # auto: see maml_cli/execution.py
SPLITS = ("train", "val", "test")


IMAGE_FOLDER_LAYOUTS = ("auto", "classes", "splits")  # dataset.layout of dataset=image_folder
IMAGE_RESAMPLE = ("lanczos", "bilinear", "nearest")  # dataset.resample of dataset=image_folder (Pillow's filters)
REGRESSION_DATASETS = ("sinusoid",)  # scored by mse (lower is better); the others by accuracy


def metric_direction(dataset_name: str) -> str:
    """How a search optimises a dataset's validation metric (``${metric_direction:...}``)."""
    return "minimize" if dataset_name in REGRESSION_DATASETS else "maximize"


def register_configs() -> None:
    """Register the schemas that the YAML files extend (``defaults: [_schema_...]``) and the
    resolvers they use."""
    if not OmegaConf.has_resolver("metric_direction"):
        OmegaConf.register_new_resolver("metric_direction", metric_direction)
    cs = ConfigStore.instance()
    cs.store(name="_train_schema", node=TrainConfig)
    cs.store(name="_eval_schema", node=EvalAppConfig)
    cs.store(name="_adapt_schema", node=AdaptAppConfig)
    cs.store(group="dataset", name="_schema_run_data", node=EvalDatasetOverrides)
    for name, node in DATASET_SCHEMAS.items():
        cs.store(group="dataset", name=f"_schema_{name}", node=node)
    for name, node in MODEL_SCHEMAS.items():
        cs.store(group="model", name=f"_schema_{name}", node=node)
    for name, node in ALGORITHM_SCHEMAS.items():
        cs.store(group="algorithm", name=f"_schema_{name}", node=node)


def _typed(schemas: dict, node: Any, group: str) -> DictConfig:
    name = node.get("name")
    if name not in schemas:
        raise UserError(f"unknown {group} {name!r}; known: {', '.join(sorted(schemas))}")
    return OmegaConf.merge(OmegaConf.structured(schemas[name]), node)


def conform(raw: Any, source: str = "config") -> DictConfig:
    """``raw`` merged onto the schemas, so keys the schemas lack (say ``+train.stepz=3``, which
    Hydra lets through) and wrong types fail here with a UserError."""
    if isinstance(raw, DictConfig):  # drop the node types so every key is checked afresh
        raw = OmegaConf.create(OmegaConf.to_container(raw, resolve=False))
    try:
        return OmegaConf.merge(
            OmegaConf.structured(TrainConfig),
            {
                "dataset": _typed(DATASET_SCHEMAS, raw.dataset, "dataset"),
                "model": _typed(MODEL_SCHEMAS, raw.model, "model"),
                "algorithm": _typed(ALGORITHM_SCHEMAS, raw.algorithm, "algorithm"),
            },
            raw,
        )
    except UserError:
        raise
    except Exception as e:  # omegaconf's key and validation errors
        raise UserError(f"{source} does not match the config schema: {e}") from e


def load_run_config(run_dir: Path) -> DictConfig:
    """The resolved config a maml-train run saved, re-checked against the schemas."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(
            f"{run_dir} is not a maml-train run directory (no config.yaml); "
            "pass run_dir=PATH of a directory that maml-train wrote"
        )
    return conform(OmegaConf.load(path), source=str(path))


def validate(cfg: DictConfig) -> None:
    """Checks that types cannot express. Raises UserError with every problem found."""
    conform(cfg)
    problems = []
    d, a, t, e = cfg.dataset, cfg.algorithm, cfg.train, cfg.eval

    def need(ok: bool, msg: str) -> None:
        if not ok:
            problems.append(msg)

    need(d.ways >= 1, f"dataset.ways must be >= 1 (got {d.ways})")
    need(d.shots >= 1, f"dataset.shots must be >= 1 (got {d.shots})")
    need(d.query_shots >= 1, f"dataset.query_shots must be >= 1 (got {d.query_shots})")
    if d.name == "sinusoid":
        need(d.ways == 1, f"sinusoid is regression: dataset.ways must be 1 (got {d.ways})")
        need(d.amplitude_min <= d.amplitude_max, "dataset.amplitude_min must be <= amplitude_max")
        need(d.phase_min <= d.phase_max, "dataset.phase_min must be <= phase_max")
        need(d.x_min < d.x_max, "dataset.x_min must be < x_max")
    if d.name == "image_folder":
        need(d.layout in IMAGE_FOLDER_LAYOUTS, one_of("dataset.layout", d.layout, IMAGE_FOLDER_LAYOUTS))
        need(d.channels in (None, 1, 3), f"dataset.channels must be 1, 3 or null (got {d.channels})")
        need(d.image_size >= 1, f"dataset.image_size must be >= 1 (got {d.image_size})")
        need(d.resample in IMAGE_RESAMPLE, one_of("dataset.resample", d.resample, IMAGE_RESAMPLE))
        for key in ("train_classes", "val_classes"):
            need(d[key] >= 0 and (d[key] < 1 or d[key] == int(d[key])),
                 f"dataset.{key} must be a whole number of classes or a fraction below 1 (got {d[key]})")
    need(a.inner_lr >= 0, f"algorithm.inner_lr must be >= 0 (got {a.inner_lr})")
    need(a.inner_steps >= 0, f"algorithm.inner_steps must be >= 0 (got {a.inner_steps})")
    need(t.steps >= 0, f"train.steps must be >= 0 (got {t.steps})")
    need(t.meta_batch_size >= 1, f"train.meta_batch_size must be >= 1 (got {t.meta_batch_size})")
    need(t.outer_lr > 0, f"train.outer_lr must be > 0 (got {t.outer_lr})")
    need(t.grad_clip is None or t.grad_clip > 0, "train.grad_clip must be > 0 or null")
    need(t.grad_clip_value is None or t.grad_clip_value > 0, "train.grad_clip_value must be > 0 or null")
    for key in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "steps_per_call"):
        need(t[key] >= 1, f"train.{key} must be >= 1 (got {t[key]})")
    need(t.keep_best >= 0, f"train.keep_best must be >= 0 (got {t.keep_best})")
    need(t.grad_clip_scope in GRAD_CLIP_SCOPES, one_of("train.grad_clip_scope", t.grad_clip_scope, GRAD_CLIP_SCOPES))
    need(t.task_batching in TASK_BATCHING, one_of("train.task_batching", t.task_batching, TASK_BATCHING))
    need(str(t.devices) == "auto" or (str(t.devices).isdigit() and int(t.devices) >= 1),
         f"train.devices must be auto or a number >= 1 (got {t.devices!r})")
    need(e.episodes >= 1, f"eval.episodes must be >= 1 (got {e.episodes})")
    need(e.inner_steps >= 0, f"eval.inner_steps must be >= 0 (got {e.inner_steps})")
    need(e.val_episodes >= 1, f"eval.val_episodes must be >= 1 (got {e.val_episodes})")
    need(e.batch_size >= 1, f"eval.batch_size must be >= 1 (got {e.batch_size})")
    need(e.query_shots is None or e.query_shots >= 1, f"eval.query_shots must be >= 1 or null (got {e.query_shots})")
    need(t.time_limit_minutes is None or t.time_limit_minutes > 0, "train.time_limit_minutes must be > 0 or null")
    problems += _algorithm_problems(a, cfg.model, t)
    if cfg.model.name == "conv4":
        m = cfg.model
        need(m.bn_epsilon > 0, f"model.bn_epsilon must be > 0 (got {m.bn_epsilon})")
        need(0 < m.bn_momentum <= 1, f"model.bn_momentum must be in (0, 1] (got {m.bn_momentum})")
    if len(problems) == 1:
        raise UserError(f"invalid config: {problems[0]}")
    if problems:
        raise UserError("invalid config:\n  " + "\n  ".join(problems))


def _algorithm_problems(a, model, t) -> List[str]:
    problems = []
    per_step_bn = model.get("batch_norm") == "per_step"
    if a.name == "anil" and per_step_bn:
        problems.append("algorithm=anil computes the body's features once per task: it cannot use "
                        "model.batch_norm=per_step (per inner step); use transductive or none")
    if per_step_bn and a.inner_steps < 1:
        problems.append("model.batch_norm=per_step needs algorithm.inner_steps >= 1")
    if a.name == "metasgd" and a.lr_init_range is not None:
        r = list(a.lr_init_range)
        if len(r) != 2 or r[0] > r[1]:
            problems.append(f"algorithm.lr_init_range must be [low, high] with low <= high (got {r})")
    if a.name == "mamlpp":
        if a.inner_steps < 1:
            problems.append("algorithm=mamlpp needs algorithm.inner_steps >= 1")
        if a.multi_step_loss and a.multi_step_loss_steps < 1:
            problems.append("algorithm.multi_step_loss_steps must be >= 1 (or multi_step_loss=false)")
        if a.first_order_steps < 0:
            problems.append(f"algorithm.first_order_steps must be >= 0 (got {a.first_order_steps})")
        if a.cosine_annealing and not 0 < a.min_outer_lr <= t.outer_lr:
            problems.append(f"algorithm.min_outer_lr must be in (0, train.outer_lr] (got {a.min_outer_lr})")
    if a.name == "reptile":
        for key in ("inner_batch_size", "eval_inner_batch_size"):
            if a[key] < 1:
                problems.append(f"algorithm.{key} must be >= 1 (got {a[key]})")
        if a.train_shots is not None and a.train_shots < 1:
            problems.append(f"algorithm.train_shots must be >= 1 or null (got {a.train_shots})")
        if not a.outer_step_size > 0 or a.outer_step_size_final < 0:
            problems.append("algorithm.outer_step_size must be > 0 and outer_step_size_final >= 0")
    return problems


# Keys that may change when a run is resumed: how long and how chatty it is, not what it computes.
RESUMABLE_CHANGES = (
    "train.steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.keep_best",
    "train.progress",
    "train.dry_run",
    "train.plots",
    "eval.episodes",
    "eval.val_episodes",
    "eval.batch_size",  # which tasks are scored depends on eval.seed only
    "eval.query_shots",
    "train.time_limit_minutes",
    # How the same math is executed (maml_cli/execution.py): a run may resume on other hardware.
    "train.task_batching",
    "train.remat",
    "train.steps_per_call",
    "train.devices",
    "model.conv_impl",
    "distributed.coordinator",
    "distributed.num_processes",
    "distributed.process_id",
)


def _flatten(node: Any, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _anneals_over_train_steps(cfg: DictConfig) -> bool:
    """Whether the outer step size follows a schedule spanning train.steps (so train.steps is part
    of the math): MAML++'s cosine annealing, Reptile's linear annealing."""
    a = cfg.algorithm
    return (a.name == "mamlpp" and a.cosine_annealing) or a.name == "reptile"


def resume_conflicts(saved: DictConfig, current: DictConfig) -> List[str]:
    """Keys whose values differ between a run's saved config and the one resuming it. The saved
    config is first read through the current schemas, so a key added since takes its default."""
    saved = conform(saved, source="the saved config.yaml")
    annealed = _anneals_over_train_steps(saved)
    resumable = set(RESUMABLE_CHANGES) - ({"train.steps"} if annealed else set())
    a = _flatten(OmegaConf.to_container(saved, resolve=True))
    b = _flatten(OmegaConf.to_container(current, resolve=True))
    why = {"train.steps": " (this algorithm anneals its outer step size over train.steps)"} if annealed else {}
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}{why.get(k, '')}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and k not in resumable
    ]
