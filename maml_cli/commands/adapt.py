"""maml-adapt: use a trained run on a new few-shot task of your own, and predict its query examples.

    maml-adapt run_dir=runs/o5 support=task/support query=task/query      # images
    maml-adapt run_dir=runs/sine support=points.csv query=-5:5:200         # regression

It adapts exactly as maml-eval does (the algorithm's ``adapt_to_task``, the run's
``eval.inner_steps``), so its predictions on a task are those maml-eval scores on the same task.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from maml_cli import strict_json
from maml_cli.atomic import WriteError, atomic_open, describe_os_error, write_text
from maml_cli.commands import shell as cli
from maml_cli.config import composing, register_configs
from maml_cli.config.schema import FLOAT32_MAX
from maml_cli.errors import UserError
from maml_cli.paths import checked_path
from maml_cli.run import plots

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

Regression: support=CSV with columns x,y (a run of several inputs or outputs: x1,x2,...,y1,...),
exactly those, every value a finite number; query=CSV with the x columns (and y, then the MSE is
printed) or START:STOP:NUM (NUM points, 1..1000000). A header row of names may come first. Writes
predictions.csv and adapted.png (support points, the curve before and after adaptation).""",
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
    if not qroot.is_file() and not qroot.is_dir():
        raise UserError(f"query={qroot} is neither a folder nor a file (a device, a pipe): give images")
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


MAX_QUERY_POINTS = 1_000_000  # query=START:STOP:NUM: the points predicted (and written) at once


@dataclass
class PointsFile:
    """The numbers of a CSV of points (float64 [rows, columns]) and each row's line in the file."""

    source: str  # the file, or query=START:STOP:NUM
    values: np.ndarray
    lines: list[int] | None  # None: the points of START:STOP:NUM
    inputs: int  # the first ``inputs`` columns are x, the rest y

    def where(self, name: str, index: tuple) -> str:
        """Where ``name[index]`` (support_x, support_y, query_x; a row, or one value) came from: the
        file's line and column, or the point of START:STOP:NUM."""
        if self.lines is None:
            return f"point {index[0] + 1} of query={self.source}"
        if len(index) == 1 and not name.endswith("_y"):
            return f"{self.source}, line {self.lines[index[0]]}"
        column = (index[1] if len(index) > 1 else 0) + (self.inputs if name.endswith("_y") else 0)
        return f"{self.source}, line {self.lines[index[0]]}, column {column + 1}"


def _column_names(inputs: int, outputs: int) -> tuple[list[str], list[str]]:
    xs = ["x"] if inputs == 1 else [f"x{i + 1}" for i in range(inputs)]
    ys = ["y"] if outputs == 1 else [f"y{i + 1}" for i in range(outputs)]
    return xs, ys


def _columns_text(count: int, inputs: int, outputs: int) -> str:
    xs, ys = _column_names(inputs, outputs)
    return f"{count} ({', '.join((xs + ys)[:count])})"


def read_points(path: str, what: str, inputs: int, outputs: int) -> PointsFile:
    """A CSV of points: a support file has ``inputs + outputs`` numbers a row (x then y), a query
    file ``inputs`` (or ``inputs + outputs``: then the MSE is printed); one header row of names
    may come first, blank lines are skipped. A missing value, a word, a row of another width, a
    file that is no UTF-8 text: one line naming the file and line."""
    f = Path(path).expanduser()
    xs, ys = _column_names(inputs, outputs)
    if not f.is_file():
        raise UserError(
            f"{what}={f} is not a file: give a CSV with columns {','.join(xs + ys)}"
            + (" or START:STOP:NUM" if what == "query" and inputs == 1 else "")
        )
    allowed = (inputs + outputs,) if what == "support" else (inputs, inputs + outputs)
    need = " or ".join(_columns_text(n, inputs, outputs) for n in allowed)
    rows, lines, first = [], [], True
    try:
        with open(f, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for row in reader:
                line = reader.line_num
                if not "".join(row).strip():
                    continue
                cells = [c.strip() for c in row]
                numbers = [_number(c) for c in cells]
                if first and all(n is None for n in numbers):  # a header of names
                    first = False
                    continue
                first = False
                if len(cells) not in allowed:
                    hint = " (columns are separated by commas)" if any(c in row[0] for c in ";\t") else ""
                    raise UserError(f"{f}, line {line}: {len(cells)} values; a {what} row needs {need}{hint}")
                if rows and len(cells) != len(rows[0]):
                    raise UserError(
                        f"{f}, line {line}: {len(cells)} values where the rows above have {len(rows[0])}: "
                        "every row needs the same columns"
                    )
                for column, (cell, number) in enumerate(zip(cells, numbers)):
                    if number is None:
                        said = "is empty (a missing value)" if not cell else f"is {_shown(cell)}, not a number"
                        hint = " (columns are separated by commas)" if any(c in cell for c in ";\t") else ""
                        raise UserError(f"{f}, line {line}, column {column + 1} {said}{hint}")
                rows.append(numbers)
                lines.append(line)
    except UnicodeDecodeError as e:
        raise UserError(f"{what}={f} is not a text file (byte {e.start} is not UTF-8): give a CSV of numbers") from None
    except csv.Error as e:
        raise UserError(f"{what}={f} is not a CSV file ({e}): give a CSV of numbers") from None
    except OSError as e:
        raise UserError(f"cannot read {what}={f}: {e.strerror or e}") from None
    if not rows:
        raise UserError(f"{f} holds no rows of numbers: a {what} CSV needs rows of {need} values")
    return PointsFile(str(f), np.asarray(rows, dtype=np.float64), lines, inputs)


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _shown(text: str, limit: int = 40) -> str:
    """``text`` quoted on one line, cut at ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def query_points(query: str, inputs: int, outputs: int) -> PointsFile:
    """The regression query: a CSV (``read_points``), or for one input ``START:STOP:NUM``, NUM
    points evenly from START to STOP."""
    if Path(query).expanduser().is_file() or query.count(":") != 2:
        return read_points(query, "query", inputs, outputs)
    if inputs != 1:
        raise UserError(f"query=START:STOP:NUM gives one input per point; this run takes {inputs}: give a CSV")
    start, stop, num = (part.strip() for part in query.split(":"))
    ends = []
    for name, text in (("START", start), ("STOP", stop)):
        value = _number(text)
        if value is None or not abs(value) <= FLOAT32_MAX:
            raise UserError(f"query={query}: {name} must be a finite number (got {_shown(text)}); e.g. -5:5:200")
        ends.append(value)
    if not (num.isascii() and num.isdigit()):
        raise UserError(f"query={query}: NUM must be a whole number of points (got {_shown(num)}); e.g. -5:5:200")
    count = int(num)
    if not 1 <= count <= MAX_QUERY_POINTS:
        raise UserError(f"query={query}: NUM must be in 1..{MAX_QUERY_POINTS} (got {count})")
    values = np.linspace(ends[0], ends[1], count, dtype=np.float64)[:, None]
    return PointsFile(query, values, None, 1)


def check_out_paths(app: DictConfig) -> None:
    """out_dir and save_adapted must be somewhere a file can go: checked before anything is read
    or compiled, so a mistake costs nothing and nothing is written."""

    for key in ("support", "query", "out_dir", "save_adapted"):
        if app.get(key) and not (key == "query" and str(app.query).count(":") == 2):
            checked_path(str(app[key]), key)
    targets = [("out_dir", Path(app.out_dir).expanduser(), True)]
    if app.save_adapted:
        targets.append(("save_adapted", _adapted_path(app), False))
    for name in ("predictions.csv", "predictions.json", "adapted.png"):
        targets.append(("out_dir", targets[0][1] / name, False))
    for key, path, folder in targets:
        if folder and path.exists() and not path.is_dir():
            raise UserError(f"{key}={path} is a file: give a folder (it is created if missing)")
        if not folder and key == "out_dir" and path.is_dir():
            raise UserError(f"out_dir={targets[0][1]} holds a folder {path.name}: remove it or write elsewhere")
        if not folder and path.is_dir():
            raise UserError(f"{key}={path} is a folder: give a file name (FILE.npz)")
        parent = path if folder else path.parent
        for above in [parent, *parent.parents]:
            if above.exists():
                if not above.is_dir():
                    raise UserError(f"{key}={path}: {above} is a file, not a folder")
                break


def _adapted_path(app: DictConfig) -> Path:
    """Where save_adapted= puts the parameters: the path, with .npz added as np.savez adds it."""
    path = Path(app.save_adapted).expanduser()
    if path.name in ("", "..") or path.is_dir():
        raise UserError(f"save_adapted={app.save_adapted} is a folder: give a file name (FILE.npz)")
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _make_folder(key: str, folder: Path) -> None:

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"cannot create {key} folder {folder} ({describe_os_error(e)})") from e


# --- adapting ---------------------------------------------------------------------------------------


def _transductive(cfg, network) -> bool:
    return cfg.model.get("batch_norm", "none") != "none" and not network.eval_with_running_stats


@dataclass
class _Task:
    """The user's task, read and checked: support set, query examples (with their true labels or
    targets, when given), and how to name a query example in an error."""

    support_x: np.ndarray
    support_y: np.ndarray
    used: object  # the classes the support set has (classification), as check_support says
    query_x: np.ndarray
    truth: np.ndarray | None
    query_where: object
    images: object = None  # the image task (classification): its files and classes


def adapt_run(app: DictConfig, out=None) -> dict:
    """Adapt the run to the task ``app`` names, print and write the predictions; returns the record.
    Every input is checked, and every prediction made, before the first file is written."""
    # The engine (JAX, Flax, Orbax): loaded here, after the command line was checked.
    from maml_cli.engine import adapt as engine
    from maml_cli.engine.experiment import build_experiment
    from maml_cli.models import describe_batch_norm
    from maml_cli.run import reader

    check_out_paths(app)
    run_dir = Path(app.run_dir)
    cfg = reader.open_run(run_dir, devices="1", trust_code=bool(app.trust_code))
    reader.check_trained(run_dir)
    spec = reader.run_spec(run_dir, cfg)
    steps = int(cfg.eval.inner_steps if app.inner_steps is None else app.inner_steps)
    task = _read_task(app, spec, reader.preprocessing(cfg.dataset), engine)
    exp = build_experiment(cfg, training=False, spec=spec)  # no data read: the task is the user's
    exp.plan.use_compilation_cache()
    n_query = len(task.query_x)
    transductive = spec.kind == "classification" and _transductive(cfg, exp.network)
    if transductive and n_query == 1 and not app.allow_single_query:
        raise UserError(
            "this run's model normalises with the statistics of the query batch (transductive batch "
            "norm, as MAML): one image alone is normalised by its own statistics, which a task's query "
            "set never was, so its prediction is unreliable. Give several query images at once, or "
            "allow_single_query=true to predict it anyway"
        )
    state = engine.restore_one(exp, run_dir, app.checkpoint)
    learner = engine.adapt(exp, state, task.support_x, task.support_y, steps, seed=app.seed, used_classes=task.used)
    before = learner.predict(task.query_x, adapted=False, where=task.query_where)
    after = learner.predict(task.query_x, where=task.query_where)
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
    files = {}  # name -> text, written together once all is known
    if spec.kind == "classification":
        record.update(_classify(task.images, before, after, files))
        record["batch_norm"] = describe_batch_norm(cfg.model)
        if transductive:
            record["normalisation"] = f"the {n_query} query images were normalised together, as one batch"
    else:
        record.update(_regress(task.support_x, task.support_y, task.query_x, task.truth, before, after, files))
    if app.save_adapted:
        record["adapted_parameters"] = str(_adapted_path(app))
    _write_outputs(app, record, files, task, learner, (before, after), steps, spec.kind)
    for line in files["stdout"]:
        print(line, file=out or sys.stdout)
    if transductive:
        print(
            f"# batch norm: the {n_query} query images were normalised together, as one batch "
            "(transductive, as at meta-training)",
            file=sys.stderr,
        )
    return record


def _read_task(app: DictConfig, spec, images: dict, engine) -> _Task:
    """The support and query files ``app`` names, read as the run's examples and checked."""
    if spec.kind == "classification":  # images read as maml-eval reads a cross-domain folder for this run
        invert = images["invert"] if app.invert is None else bool(app.invert)
        task = read_image_task(app.support, app.query, spec.input_shape, spec.output_dim, invert, images["resample"])
        support_x, support_y, used = engine.check_support(spec, task.support_x, task.support_y, len(task.classes))
        query_x = engine.check_examples("query_x", task.query_x, spec.input_shape)
        return _Task(
            support_x, support_y, used, query_x, None, lambda name, index: str(task.query_files[index[0]]), task
        )
    if len(spec.input_shape) != 1:
        raise UserError(
            f"maml-adapt reads regression tasks whose inputs are vectors; this run's are {spec.input_shape}"
        )
    inputs, outputs = int(spec.input_shape[0]), spec.output_dim
    points = read_points(app.support, "support", inputs, outputs)
    support_x, support_y, used = engine.check_support(
        spec, points.values[:, :inputs], points.values[:, inputs:], where=points.where
    )
    query = query_points(app.query, inputs, outputs)
    query_x = engine.check_examples("query_x", query.values[:, :inputs], spec.input_shape, query.where)
    truth = None
    if query.values.shape[1] > inputs:
        truth = engine.check_support(spec, query_x, query.values[:, inputs:], where=query.where)[1]
    return _Task(support_x, support_y, used, query_x, truth, lambda name, index: query.where("query_x", index))


def _write_outputs(
    app: DictConfig, record: dict, files: dict, task: _Task, learner, predictions: tuple, steps: int, kind: str
) -> None:
    """Every file whole (maml_cli.atomic): the plot and the adapted parameters first,
    predictions.csv and predictions.json last, side by side."""
    out_dir = Path(app.out_dir).expanduser()
    summary = strict_json.dumps(record, indent=2) + "\n"
    _make_folder("out_dir", out_dir)
    wrote = ["predictions.csv", "predictions.json"]
    if kind == "regression" and task.support_x.shape[1] == 1 and task.support_y.shape[1] == 1:
        before, after = predictions
        _plot(task.support_x, task.support_y, task.query_x, task.truth, before, after, steps, out_dir / "adapted.png")
        wrote.append("adapted.png")
    if app.save_adapted:
        path = _adapted_path(app)
        _make_folder("save_adapted", path.parent)
        extra = {"classes": np.asarray(task.images.classes)} if kind == "classification" else {}
        with atomic_open(path, "wb") as f:
            np.savez(f, **learner.flat_parameters(), **extra)
    write_text(out_dir / "predictions.csv", files["predictions.csv"])
    write_text(out_dir / "predictions.json", summary)
    print(f"# wrote {out_dir / wrote[0]}, {', '.join(wrote[1:])}", file=sys.stderr)
    if app.save_adapted:
        print(f"# adapted parameters: {record['adapted_parameters']}", file=sys.stderr)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _csv_text(rows: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def _classify(task: ImageTask, before: np.ndarray, after: np.ndarray, files: dict) -> dict:
    probs = _softmax(after)[:, : len(task.classes)]
    predicted = probs.argmax(-1)
    labelled = task.query_labels >= 0
    rows, table, said = [], [["file", "predicted", "probability", "label"] + [f"p_{c}" for c in task.classes]], []
    for i, path in enumerate(task.query_files):
        label = task.classes[task.query_labels[i]] if labelled[i] else ""
        table.append(
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
        said.append(f"{path}\t{task.classes[predicted[i]]}\t{probs[i, predicted[i]]:.4f}")
    record = {
        "classes": task.classes,
        "support_examples": {c: int((task.support_y == k).sum()) for k, c in enumerate(task.classes)},
        "predictions": rows,
    }
    if labelled.any():
        acc = float(np.mean(predicted[labelled] == task.query_labels[labelled]))
        acc0 = float(np.mean(before.argmax(-1)[labelled] == task.query_labels[labelled]))
        record.update(accuracy=acc, accuracy_before_adaptation=acc0, labelled_query_examples=int(labelled.sum()))
        said.append(
            f"# accuracy {100 * acc:.2f}% on {int(labelled.sum())} labelled query images "
            f"({100 * acc0:.2f}% before adaptation)"
        )
    files.update({"predictions.csv": _csv_text(table), "stdout": said})
    return record


def _regress(support_x, support_y, query_x, truth, before, after, files: dict) -> dict:
    """predictions.csv (x..., y..., y..._before_adaptation, y..._true when the query has y), the
    record's predictions (one number per x and y when the run has one input and one output)."""
    xs, ys = _column_names(query_x.shape[1], after.shape[1])
    header = xs + ys + [f"{c}_before_adaptation" for c in ys] + ([f"{c}_true" for c in ys] if truth is not None else [])
    table, said = [header], []
    for i in range(len(query_x)):
        cells = [*query_x[i], *after[i], *before[i], *(truth[i] if truth is not None else [])]
        table.append([f"{v:.6g}" for v in cells])
        said.append("\t".join(f"{v:.6g}" for v in [*query_x[i], *after[i]]))

    def one_or_all(row):
        return float(row[0]) if len(row) == 1 else [float(v) for v in row]

    record = {
        "support_points": int(len(support_x)),
        "predictions": [{"x": one_or_all(a), "y": one_or_all(b)} for a, b in zip(query_x, after)],
    }
    if truth is not None:
        record.update(
            mse=float(np.mean((after - truth) ** 2)), mse_before_adaptation=float(np.mean((before - truth) ** 2))
        )
        said.append(f"# mse {record['mse']:.4g} ({record['mse_before_adaptation']:.4g} before adaptation)")
    files.update({"predictions.csv": _csv_text(table), "stdout": said})
    return record


def _plot(support_x, support_y, query_x, truth, before, after, steps: int, path: Path) -> None:
    """adapted.png: the support points, the curve before and after adaptation (one input, one output)."""

    x = query_x[:, 0]
    order = np.argsort(x)
    plots.adaptation(
        [
            {
                "x": x[order],
                "true": None if truth is None else truth[order, 0],
                "support_x": support_x[:, 0],
                "support_y": support_y[:, 0],
                "pred": {0: before[order, 0], steps: after[order, 0]},
            }
        ],
        sorted({0, steps}),
        path,
    )


def run_jobs(line: cli.CommandLine, composed: list) -> bool:
    """Adapt to each task the command line names, in this process (Hydra creates nothing)."""

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


@cli.guarded("maml-adapt")
def main(argv: Sequence[str] | None = None) -> None:
    cli.main(APP, argv, run_jobs, hydra_job)


@hydra.main(version_base="1.3", config_path="pkg://maml_cli.configs", config_name="adapt")
def hydra_job(app: DictConfig) -> None:
    """Reached only with Hydra's own flags (--cfg, --info, ...): Hydra prints what they ask for."""


if __name__ == "__main__":
    main()
