"""maml-adapt: use a trained run on a new few-shot task of your own, and predict its query examples.

    maml-adapt run_dir=runs/o5 support=task/support query=task/query      # images
    maml-adapt run_dir=runs/sine support=points.csv query=-5:5:200         # regression

It adapts exactly as maml-eval does (the algorithm's ``adapt_to_task``, the run's
``eval.inner_steps``), so its predictions on a task are those maml-eval scores on the same task.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from maml_cli import strict_json
from maml_cli.commands import shell as cli
from maml_cli.config import register_configs
from maml_cli.errors import UserError

log = logging.getLogger("maml_cli.commands.adapt")
register_configs()
for _name in ("jax._src.xla_bridge", "matplotlib"):
    logging.getLogger(_name).setLevel(logging.WARNING)
logging.getLogger("absl").setLevel(logging.CRITICAL)

APP = cli.App(
    "maml-adapt",
    "adapt",
    groups=(),
    exit_codes=cli.READER_EXIT_CODES,
    usage="""\
maml-adapt: adapt a trained run to a new few-shot task and predict its query examples.

Usage:
  maml-adapt run_dir=RUN support=DIR query=DIR|FILE [KEY=VALUE ...]     image classification
  maml-adapt run_dir=RUN support=POINTS.csv query=XS.csv|START:STOP:NUM  regression (sinusoid runs)

Classification: support=DIR holds one folder per class (its name is the class name) with the
labelled examples: at most the run's ways classes; with fewer, the unused outputs are masked.
query=DIR holds the images to predict; class folders in it (named as the support's) are scored.
One line per query image (file, predicted class, probability) goes to stdout, and
OUT_DIR/predictions.csv and predictions.json are written. Images are resized and converted to the
run's image size and channels; invert=true for dark ink on white paper (Omniglot runs: default).

Batch norm: a transductive model (batch statistics at test time, as MAML) normalises the query
images as one batch; the output says how many. One query image alone is refused unless
allow_single_query=true: its own statistics are not those of a task's query set.

Regression: support=CSV with columns x,y; query=CSV with a column x (and y, then the MSE is
printed) or START:STOP:NUM. Writes predictions.csv and adapted.png (support points, the curve
before and after adaptation).""",
)


# --- reading the task -----------------------------------------------------------------------------


@dataclass
class ImageTask:
    support_x: np.ndarray  # float32 [n, H, W, C] in [0, 1]
    support_y: np.ndarray
    classes: list[str]
    query_x: np.ndarray
    query_labels: np.ndarray  # the class index of each query image, -1 where unlabelled
    query_files: list[Path]


def _images(files: Sequence[Path], shape: tuple, invert: bool, resample: str) -> np.ndarray:
    from maml_cli.data.image_folder import decode_image

    size, _, channels = shape
    return (
        np.stack(
            [decode_image(f, channels=channels, image_size=size, resample=resample, invert=invert) for f in files]
        ).astype(np.float32)
        / 255.0
    )


def read_image_task(support: str, query: str, shape: tuple, ways: int, invert: bool, resample: str) -> ImageTask:
    from maml_cli.data.image_folder import class_folders, image_files, subfolders

    root = Path(support).expanduser()
    if not root.is_dir():
        raise UserError(
            f"support={root} {'is a file' if root.exists() else 'does not exist'}: it must be a folder "
            "with one folder of example images per class"
        )
    classes = class_folders(root, "support")
    names = list(classes)
    if len(names) > ways:
        raise UserError(
            f"support={root} has {len(names)} classes, but the run's model was trained for {ways}-way "
            f"tasks: give at most {ways} classes"
        )
    support_files = [f for n in names for f in classes[n]]
    support_y = np.repeat(np.arange(len(names), dtype=np.int32), [len(classes[n]) for n in names])

    qroot = Path(query).expanduser()
    if not qroot.exists():
        raise UserError(f"query={qroot} does not exist: give a folder of images, class folders or one image file")
    if qroot.is_file():
        query_files, labels = [qroot], [-1]
    else:
        query_files = image_files(qroot)
        labels = [-1] * len(query_files)
        for folder in subfolders(qroot):
            if folder.name not in names:
                raise UserError(
                    f"query class folder {folder} has no support folder of that name (support classes: "
                    f"{', '.join(names)})"
                )
            files = image_files(folder)
            query_files += files
            labels += [names.index(folder.name)] * len(files)
    if not query_files:
        raise UserError(f"query={qroot} holds no PNG or JPEG images")
    return ImageTask(
        _images(support_files, shape, invert, resample),
        support_y,
        names,
        _images(query_files, shape, invert, resample),
        np.asarray(labels, dtype=np.int32),
        query_files,
    )


def read_points(path: str, what: str, min_columns: int) -> np.ndarray:
    """float [rows, columns] from a CSV (a header row of names is skipped)."""
    f = Path(path).expanduser()
    if not f.is_file():
        raise UserError(
            f"{what}={f} is not a file: give a CSV with columns x,y" + (" or START:STOP:NUM" if what == "query" else "")
        )
    rows = []
    with open(f, newline="") as handle:
        for i, row in enumerate(csv.reader(handle)):
            if not row or not "".join(row).strip():
                continue
            try:
                rows.append([float(v) for v in row])
            except ValueError:
                if i == 0:  # a header
                    continue
                raise UserError(f"{f}, line {i + 1}: {row} is not numbers") from None
    if not rows or min(len(r) for r in rows) < min_columns:
        raise UserError(f"{f} needs at least {min_columns} numeric column(s) and one row")
    return np.asarray([r[:2] for r in rows], dtype=np.float32)


def query_points(query: str) -> np.ndarray:
    if query.count(":") == 2:
        try:
            start, stop, num = query.split(":")
            return np.linspace(float(start), float(stop), int(num), dtype=np.float32)[:, None]
        except ValueError:
            raise UserError(f"query={query}: write START:STOP:NUM, e.g. -5:5:200") from None
    return read_points(query, "query", 1)


# --- adapting ---------------------------------------------------------------------------------------


def _transductive(cfg, network) -> bool:
    return cfg.model.get("batch_norm", "none") != "none" and not network.eval_with_running_stats


def adapt_run(app: DictConfig, out=None) -> dict:
    """Adapt the run to the task ``app`` names, print and write the predictions; returns the record."""
    import jax
    from flax import traverse_util

    from maml_cli.execution import enable_compilation_cache
    from maml_cli.experiment import build_experiment
    from maml_cli.models import describe_batch_norm
    from maml_cli.run_adaptation import adapt, restore_one
    from maml_cli.run_dir import atomic_write_text
    from maml_cli.runs import (
        check_trained,
        open_run,
        preprocessing,
        run_spec,
    )

    out = out or sys.stdout
    enable_compilation_cache()
    run_dir = Path(app.run_dir)
    cfg = open_run(run_dir, devices="1", trust_code=bool(app.trust_code))
    check_trained(run_dir)
    spec = run_spec(run_dir, cfg)
    steps = int(cfg.eval.inner_steps if app.inner_steps is None else app.inner_steps)
    if steps < 0:
        raise UserError(f"inner_steps must be >= 0 (got {steps})")
    out_dir = Path(app.out_dir)

    if spec.kind == "classification":
        images = preprocessing(cfg.dataset)  # as maml-eval reads a cross-domain folder for this run
        invert = images["invert"] if app.invert is None else bool(app.invert)
        task = read_image_task(app.support, app.query, spec.input_shape, spec.output_dim, invert, images["resample"])
        support_x, support_y, query_x = task.support_x, task.support_y, task.query_x
    else:
        if tuple(spec.input_shape) != (1,):
            raise UserError(
                f"maml-adapt reads regression tasks of one input (x, y); this run's inputs are {spec.input_shape}"
            )
        points = read_points(app.support, "support", 2)
        query = query_points(app.query)
        support_x, support_y, query_x = points[:, :1], points[:, 1:2], query[:, :1]

    exp = build_experiment(cfg, training=False, spec=spec)  # no data read: the task is the user's
    network = exp.network
    n_query = len(query_x)
    transductive = spec.kind == "classification" and _transductive(cfg, network)
    if transductive and n_query == 1 and not app.allow_single_query:
        raise UserError(
            "this run's model normalises with the statistics of the query batch (transductive batch "
            "norm, as MAML): one image alone is normalised by its own statistics, which a task's query "
            "set never was, so its prediction is unreliable. Give several query images at once, or "
            "allow_single_query=true to predict it anyway"
        )
    state = restore_one(exp, run_dir, app.checkpoint)
    learner = adapt(
        exp,
        state,
        support_x,
        support_y,
        steps,
        seed=app.seed,
        used_classes=len(task.classes) if spec.kind == "classification" else None,
    )
    before = learner.predict(query_x, adapted=False)
    after = learner.predict(query_x)
    adapted = learner.params
    record = {
        "run_dir": str(run_dir.resolve()),
        "checkpoint_step": learner.checkpoint_step,
        "inner_steps": steps,
        "algorithm": cfg.algorithm.name,
        "kind": spec.kind,
        "support": str(app.support),
        "query": str(app.query),
        "query_examples": n_query,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec.kind == "classification":
        record.update(_classify(task, before, after, out, out_dir))
        record["batch_norm"] = describe_batch_norm(cfg.model)
        if transductive:
            record["normalisation"] = f"the {n_query} query images were normalised together, as one batch"
            print(
                f"# batch norm: the {n_query} query images were normalised together, as one batch "
                "(transductive, as at meta-training)",
                file=sys.stderr,
            )
    else:
        record.update(_regress(support_x, support_y, query, before[:, 0], after[:, 0], steps, out, out_dir))
    atomic_write_text(out_dir / "predictions.json", strict_json.dumps(record, indent=2) + "\n")
    if app.save_adapted:
        path = Path(app.save_adapted)
        path.parent.mkdir(parents=True, exist_ok=True)
        flat = traverse_util.flatten_dict(jax.device_get(adapted), sep="/")
        extra = {"classes": np.asarray(task.classes)} if spec.kind == "classification" else {}
        np.savez(path, **{k: np.asarray(v) for k, v in flat.items()}, **extra)
        record["adapted_parameters"] = str(path)
        print(f"# adapted parameters: {path}", file=sys.stderr)
    return record


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _classify(task: ImageTask, before: np.ndarray, after: np.ndarray, out, out_dir: Path) -> dict:
    probs = _softmax(after)[:, : len(task.classes)]
    predicted = probs.argmax(-1)
    labelled = task.query_labels >= 0
    rows = []
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "predicted", "probability", "label"] + [f"p_{c}" for c in task.classes])
        for i, path in enumerate(task.query_files):
            label = task.classes[task.query_labels[i]] if labelled[i] else ""
            writer.writerow(
                [str(path), task.classes[predicted[i]], f"{probs[i, predicted[i]]:.6f}", label]
                + [f"{p:.6f}" for p in probs[i]]
            )
            rows.append(
                {
                    "file": str(path),
                    "predicted": task.classes[predicted[i]],
                    "probability": float(probs[i, predicted[i]]),
                    **({"label": label} if label else {}),
                }
            )
            print(f"{path}\t{task.classes[predicted[i]]}\t{probs[i, predicted[i]]:.4f}", file=out)
    record = {
        "classes": task.classes,
        "support_examples": {c: int((task.support_y == k).sum()) for k, c in enumerate(task.classes)},
        "predictions": rows,
    }
    if labelled.any():
        acc = float(np.mean(predicted[labelled] == task.query_labels[labelled]))
        acc0 = float(np.mean(before.argmax(-1)[labelled] == task.query_labels[labelled]))
        record.update(accuracy=acc, accuracy_before_adaptation=acc0, labelled_query_examples=int(labelled.sum()))
        print(
            f"# accuracy {100 * acc:.2f}% on {int(labelled.sum())} labelled query images "
            f"({100 * acc0:.2f}% before adaptation)",
            file=out,
        )
    print(f"# wrote {out_dir / 'predictions.csv'} and predictions.json", file=sys.stderr)
    return record


def _regress(support_x, support_y, query, before, after, steps: int, out, out_dir: Path) -> dict:
    from maml_cli import plots

    x = query[:, 0]
    truth = query[:, 1] if query.shape[1] > 1 else None
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "y", "y_before_adaptation"] + (["y_true"] if truth is not None else []))
        for i in range(len(x)):
            writer.writerow(
                [f"{x[i]:.6g}", f"{after[i]:.6g}", f"{before[i]:.6g}"]
                + ([f"{truth[i]:.6g}"] if truth is not None else [])
            )
            print(f"{x[i]:.6g}\t{after[i]:.6g}", file=out)
    order = np.argsort(x)
    plots.adaptation(
        [
            {
                "x": x[order],
                "true": None if truth is None else truth[order],
                "support_x": support_x[:, 0],
                "support_y": support_y[:, 0],
                "pred": {0: before[order], steps: after[order]},
            }
        ],
        sorted({0, steps}),
        out_dir / "adapted.png",
    )
    record = {
        "support_points": int(len(support_x)),
        "predictions": [{"x": float(a), "y": float(b)} for a, b in zip(x, after)],
    }
    if truth is not None:
        record.update(
            mse=float(np.mean((after - truth) ** 2)), mse_before_adaptation=float(np.mean((before - truth) ** 2))
        )
        print(f"# mse {record['mse']:.4g} ({record['mse_before_adaptation']:.4g} before adaptation)", file=out)
    print(f"# wrote {out_dir / 'predictions.csv'}, predictions.json and adapted.png", file=sys.stderr)
    return record


def run_jobs(line: cli.CommandLine, composed: list) -> bool:
    """Adapt to each task the command line names, in this process (Hydra creates nothing)."""
    from maml_cli import composing

    for full in composed:
        app, _ = composing.split_hydra(full)
        for key, what in (
            ("run_dir", "which run? pass run_dir=PATH, a directory maml-train wrote"),
            ("support", "pass support=DIR (one folder of images per class) or support=POINTS.csv"),
            ("query", "pass query=DIR (images to predict), query=FILE or, for regression, query=START:STOP:NUM"),
        ):
            if OmegaConf.is_missing(app, key):
                raise UserError(f"{what} (maml-adapt --help)")
        adapt_run(app)
    return False  # done: nothing is handed to Hydra


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(APP, argv, run_jobs, hydra_job)


@hydra.main(version_base="1.3", config_path="pkg://maml_cli.configs", config_name="adapt")
def hydra_job(app: DictConfig) -> None:
    """Reached only with Hydra's own flags (--cfg, --info, ...): Hydra prints what they ask for."""


if __name__ == "__main__":
    main()
