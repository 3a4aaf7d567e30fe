"""Bad inputs a tired person types, each with what the tool must say: the rows of
docs/reliability.md. ``tests/test_reliability.py`` runs every row through the installed console
scripts and checks exit code 2, one message, no traceback, nothing created, and that the message
is the one the document prints; ``scripts/reliability_table.py`` writes the document.

In a command, ``{tmp}`` is the folder the command runs in; the workspace there holds ``run/`` (a
trained tiny sinusoid run), ``omniglot/`` (a tiny Omniglot source), ``notes.txt`` (a file),
``empty/`` (an empty folder), ``damaged/`` (a run whose newest checkpoint is truncated),
``coded/`` (a run whose config names a model of its own to import), ``folders/`` and
``hostile/`` (broken class-per-folder image sets: tests/image_fakes.py ``write_bad_folders``,
``write_hostile_folders``), ``zips/`` (damaged Omniglot zips), ``support.csv`` (regression
support points) and tampered copies of ``run/``: ``edited/`` (config.yaml names another model),
``copied/`` (its newest checkpoint comes from another run of the same config), ``no_config/``
(config.yaml deleted), ``lock_folder/`` (its lock file replaced by a folder) and ``dangling`` (a
link to nothing). A row's ``env``
sets environment variables for its command.
"""

from __future__ import annotations

from dataclasses import dataclass

OMNIGLOT = (
    "experiment=omniglot_tiny",
    "dataset.path={tmp}/omniglot",
    "dataset.cache_dir={tmp}/cache",
    "dataset.train_classes=12",
    "dataset.val_classes=4",
)


def omniglot_at(path: str) -> tuple[str, ...]:
    """The OMNIGLOT settings with another source folder."""
    return tuple(f"dataset.path={path}" if a.startswith("dataset.path=") else a for a in OMNIGLOT)


FOLDER = (
    "dataset=image_folder",
    "model=conv4",
    "dataset.image_size=8",
    "dataset.cache_dir={tmp}/cache",
    "dataset.ways=2",
    "dataset.train_classes=2",
    "dataset.val_classes=2",
)


@dataclass(frozen=True)
class BadInput:
    what: str  # the mistake, in the words of the person who made it
    command: tuple[str, ...]  # the console script and its arguments
    says: str  # a fragment the message must contain
    env: tuple[tuple[str, str], ...] = ()  # environment variables set for the command


BAD_INPUTS = [
    BadInput("misspelt key", ("maml-train", "train.stepz=100"), "did you mean train.steps?"),
    BadInput(
        "misspelt key, with the + Hydra's own message suggests",
        ("maml-train", "+train.stepz=100"),
        "did you mean train.steps?",
    ),
    BadInput("key without its section", ("maml-train", "inner_lr=0.1"), "did you mean algorithm.inner_lr?"),
    BadInput(
        "key of another algorithm", ("maml-train", "algorithm.multi_step_loss=false"), "is a key of algorithm=mamlpp"
    ),
    BadInput("misspelt dataset", ("maml-train", "dataset=omniglott"), "did you mean omniglot?"),
    BadInput("misspelt algorithm", ("maml-train", "algorithm=mamlplus"), "did you mean mamlpp?"),
    BadInput("misspelt experiment preset", ("maml-train", "experiment=omniglot_5w1"), "did you mean omniglot_5w1s?"),
    BadInput("text where a number goes", ("maml-train", "train.steps=ten"), "'ten' is not a valid integer"),
    BadInput("text where a rate goes", ("maml-train", "algorithm.inner_lr=fast"), "'fast' is not a valid float"),
    BadInput("broken override syntax", ("maml-train", "train.steps==5"), "write KEY=VALUE"),
    BadInput("negative steps", ("maml-train", "train.steps=-5"), "train.steps must be >= 0"),
    BadInput("zero outer learning rate", ("maml-train", "train.outer_lr=0"), "train.outer_lr must be > 0"),
    BadInput(
        "negative inner learning rate", ("maml-train", "algorithm.inner_lr=-0.01"), "algorithm.inner_lr must be >= 0"
    ),
    BadInput("empty meta-batch", ("maml-train", "train.meta_batch_size=0"), "train.meta_batch_size must be >= 1"),
    BadInput("misspelt choice of a string key", ("maml-train", "train.task_batching=vmpa"), "did you mean vmap?"),
    BadInput("more devices than the machine has", ("maml-train", "train.devices=64"), "train.devices=64, but"),
    BadInput(
        "a coordinator address without a port",
        ("maml-train", "distributed.coordinator=node01"),
        "distributed.coordinator must be HOST:PORT",
    ),
    BadInput("misspelt launcher", ("maml-train", "-m", "launcher=slrum", "seed=0,1"), "did you mean slurm?"),
    BadInput("ways on a regression dataset", ("maml-train", "dataset.ways=5"), "dataset.ways must be 1"),
    BadInput(
        "more ways than the split has classes",
        ("maml-train", *OMNIGLOT, "dataset.ways=20"),
        "fewer than dataset.ways=20",
    ),
    BadInput(
        "more shots than a class has examples",
        ("maml-train", *OMNIGLOT, "dataset.shots=4"),
        "dataset.shots + dataset.query_shots",
    ),
    BadInput(
        "data folder that does not exist",
        ("maml-train", "experiment=omniglot_5w1s", "dataset.path={tmp}/omniglot_data"),
        "does not exist",
    ),
    BadInput(
        "a file where the data folder goes",
        ("maml-train", "experiment=omniglot_5w1s", "dataset.path={tmp}/notes.txt"),
        "notes.txt",
    ),
    BadInput(
        "MiniImageNet without its images",
        ("maml-train", "experiment=miniimagenet_5w1s"),
        "dataset=miniimagenet needs dataset.path",
    ),
    BadInput("a file as the run directory", ("maml-train", "hydra.run.dir={tmp}/notes.txt"), "is a file"),
    BadInput(
        "resuming a run with another config",
        ("maml-train", "experiment=sinusoid_tiny", "hydra.run.dir={tmp}/run", "algorithm.inner_lr=0.5"),
        "holds a run with a different config",
    ),
    BadInput("maml-eval without a run", ("maml-eval",), "pass run_dir=PATH"),
    BadInput("maml-eval on a folder that does not exist", ("maml-eval", "run_dir={tmp}/runs/nope"), "does not exist"),
    BadInput(
        "maml-eval on a folder that is not a run",
        ("maml-eval", "run_dir={tmp}/empty"),
        "not a maml-train run directory",
    ),
    BadInput(
        "maml-eval on a checkpoint step that does not exist",
        ("maml-eval", "run_dir={tmp}/run", "checkpoint=15"),
        "available: 10, 20",
    ),
    BadInput("maml-eval on a damaged checkpoint", ("maml-eval", "run_dir={tmp}/damaged"), "cannot be read"),
    BadInput(
        "a checkpoint that is neither a step nor best",
        ("maml-eval", "run_dir={tmp}/run", "checkpoint=worst"),
        "is not a checkpoint",
    ),
    BadInput(
        "an ensemble of more checkpoints than the run kept",
        ("maml-eval", "run_dir={tmp}/run", "checkpoint=best:9"),
        "needs 9 checkpoints with a validation",
    ),
    BadInput(
        "Reptile's transductive switch on another algorithm",
        ("maml-eval", "run_dir={tmp}/run", "transductive=false"),
        "transductive= is Reptile's evaluation switch",
    ),
    BadInput("misspelt split", ("maml-eval", "run_dir={tmp}/run", "split=tset"), "did you mean test?"),
    BadInput(
        "misspelt maml-eval key", ("maml-eval", "run_dir={tmp}/run", "eval.episode=10"), "did you mean eval.episodes?"
    ),
    BadInput(
        "a training key given to maml-eval",
        ("maml-eval", "run_dir={tmp}/run", "train.steps=10"),
        "not a maml-eval config key",
    ),
    BadInput(
        "image folder that does not exist",
        ("maml-train", *FOLDER, "dataset.path={tmp}/folders/nowhere"),
        "does not exist",
    ),
    BadInput(
        "image class with fewer images than a task needs",
        ("maml-train", *FOLDER, "dataset.path={tmp}/folders/few"),
        "class02 (1)",
    ),
    BadInput(
        "empty class folder",
        ("maml-train", *FOLDER, "dataset.path={tmp}/folders/empty_class"),
        "no PNG or JPEG images: class03",
    ),
    BadInput(
        "unreadable image file",
        ("maml-train", *FOLDER, "dataset.path={tmp}/folders/broken"),
        "03.png is not a readable image",
    ),
    BadInput(
        "grey and colour images mixed",
        ("maml-train", *FOLDER, "dataset.path={tmp}/folders/mixed"),
        "set dataset.channels=1 or 3",
    ),
    BadInput("maml-adapt without a support set", ("maml-adapt", "run_dir={tmp}/run", "query=-5:5:10"), "pass support="),
    BadInput(
        "maml-adapt support points that do not exist",
        ("maml-adapt", "run_dir={tmp}/run", "support={tmp}/points.csv", "query=-5:5:10"),
        "is not a file",
    ),
    BadInput(
        "a run from elsewhere that names code to import",
        ("maml-eval", "run_dir={tmp}/coded"),
        "pass trust_code=true if you trust that code",
    ),
    BadInput(
        "your own model without saying which",
        ("maml-train", "model=custom"),
        "model=custom needs model.target=module.path:name",
    ),
    BadInput(
        "your own model from a module that is not there",
        ("maml-train", "model=custom", "model.target=my_nets:make_net"),
        "cannot import my_nets",
    ),
    # Files people have (docs/reliability.md, "Files people have"): one line naming the file.
    BadInput(
        "an empty image file", ("maml-train", *FOLDER, "dataset.path={tmp}/hostile/zero_byte"), "is empty (0 bytes)"
    ),
    BadInput(
        "a JPEG cut short", ("maml-train", *FOLDER, "dataset.path={tmp}/hostile/cut_jpeg"), "image file is truncated"
    ),
    BadInput(
        "a PNG cut short", ("maml-train", *FOLDER, "dataset.path={tmp}/hostile/cut_png"), "03.png is not a readable"
    ),
    BadInput(
        "a decompression bomb",
        ("maml-train", *FOLDER, "dataset.path={tmp}/hostile/bomb"),
        "too large to decode safely",
    ),
    BadInput(
        "an image in Pillow's decompression-bomb warning band",
        ("maml-train", *FOLDER, "dataset.path={tmp}/hostile/big"),
        "too large to decode safely",
    ),
    BadInput(
        "a symbolic link that loops",
        ("maml-train", *FOLDER, "dataset.path={tmp}/hostile/link_loop"),
        "loops back on itself",
    ),
    BadInput(
        "a symbolic link to a file that is gone",
        ("maml-train", *FOLDER, "dataset.path={tmp}/hostile/dangling_link"),
        "points to nothing",
    ),
    BadInput(
        "an image whose name is not UTF-8",
        ("maml-train", *FOLDER, "dataset.path={tmp}/hostile/latin1_file"),
        "has a name that is not UTF-8",
    ),
    BadInput(
        "a class folder whose name is not UTF-8",
        ("maml-train", *FOLDER, "dataset.path={tmp}/hostile/latin1_class"),
        "has a name that is not UTF-8",
    ),
    BadInput(
        "an empty Omniglot zip",
        ("maml-train", *omniglot_at("{tmp}/zips/empty")),
        "is not a readable zip file",
    ),
    BadInput(
        "an Omniglot zip cut short",
        ("maml-train", *omniglot_at("{tmp}/zips/cut")),
        "is not a readable zip file",
    ),
    BadInput(
        "an Omniglot zip holding a damaged image",
        ("maml-train", *omniglot_at("{tmp}/zips/bad_png")),
        "is not a readable image",
    ),
    # Tampered run directories: refused, and nothing in them is changed.
    BadInput(
        "maml-eval on a run whose config.yaml was edited to another model",
        ("maml-eval", "run_dir={tmp}/edited"),
        "was trained with another config",
    ),
    BadInput(
        "maml-adapt on a run whose config.yaml was edited to another model",
        ("maml-adapt", "run_dir={tmp}/edited", "support={tmp}/support.csv", "query=-5:5:10"),
        "was trained with another config",
    ),
    BadInput(
        "resuming a run whose config.yaml was edited to another model",
        ("maml-train", "experiment=sinusoid_tiny", "hydra.run.dir={tmp}/edited"),
        "was trained with another config",
    ),
    BadInput(
        "maml-eval on a run with a checkpoint copied from another run",
        ("maml-eval", "run_dir={tmp}/copied"),
        "comes from another run",
    ),
    BadInput(
        "resuming a run with a checkpoint copied from another run",
        ("maml-train", "experiment=sinusoid_tiny", "hydra.run.dir={tmp}/copied"),
        "comes from another run",
    ),
    BadInput(
        "resuming a run whose config.yaml was deleted",
        ("maml-train", "experiment=sinusoid_tiny", "hydra.run.dir={tmp}/no_config"),
        "holds checkpoints but no config.yaml",
    ),
    BadInput(
        "maml-eval on a run whose config.yaml was deleted",
        ("maml-eval", "run_dir={tmp}/no_config"),
        "no config.yaml",
    ),
    # Values (issue 30, item 5): every number within its field's declared range, user data finite.
    BadInput("a learning rate that is not finite", ("maml-train", "train.outer_lr=inf"), "must be a finite number"),
    BadInput(
        "a seed larger than the random generator takes",
        ("maml-train", "seed=99999999999999999999"),
        "seed must be <= 4294967295",
    ),
    BadInput(
        "a hidden layer of width zero",
        ("maml-train", "model.hidden_sizes=[40,0]"),
        "model.hidden_sizes[1] must be >= 1",
    ),
    BadInput(
        "an accented letter in an unquoted path",
        ("maml-train", "dataset.path={tmp}/café"),
        "'é' (U+00E9) is allowed only inside quotes",
    ),
    BadInput(
        "maml-eval with more inner steps than it keeps scores for",
        ("maml-eval", "run_dir={tmp}/run", "eval.inner_steps=1000000"),
        "eval.inner_steps must be <= 10000",
    ),
    BadInput(
        "maml-adapt query range of no points",
        ("maml-adapt", "run_dir={tmp}/run", "support={tmp}/support.csv", "query=-5:5:0"),
        "NUM must be in 1..1000000",
    ),
    BadInput(
        "maml-adapt support file that holds no numbers",
        ("maml-adapt", "run_dir={tmp}/run", "support={tmp}/notes.txt", "query=-5:5:10"),
        "holds no rows of numbers",
    ),
    BadInput(
        "maml-adapt out_dir that is a file",
        ("maml-adapt", "run_dir={tmp}/run", "support={tmp}/support.csv", "query=-5:5:10", "out_dir={tmp}/notes.txt"),
        "is a file: give a folder",
    ),
    # Where it writes: refused before anything is written.
    BadInput("the root folder as the run directory", ("maml-train", "hydra.run.dir=/"), "is the root folder"),
    BadInput(
        "a folder of one's own files as the run directory",
        ("maml-train", "hydra.run.dir={tmp}/folders"),
        "holds files that are not a maml-train run",
    ),
    BadInput(
        "a run directory path starting with ~ (not expanded there)",
        ("maml-train", "hydra.run.dir='~/runs/sine'"),
        "which is not expanded here",
    ),
    BadInput(
        "a run whose lock file was replaced by a folder",
        ("maml-train", "experiment=sinusoid_tiny", "hydra.run.dir={tmp}/lock_folder"),
        "is a folder, not the run's lock file",
    ),
    BadInput(
        "an empty cache path",
        ("maml-train", "experiment=sinusoid_tiny"),
        "MAML_CLI_CACHE is set but empty",
        env=(("MAML_CLI_CACHE", ""),),
    ),
    BadInput(
        "a file as the cache folder",
        ("maml-eval", "run_dir={tmp}/run"),
        "is a file, not a folder",
        env=(("MAML_CLI_CACHE", "{tmp}/notes.txt"),),
    ),
    BadInput(
        "Omniglot from TFDS where no network answers",
        ("maml-train", "experiment=omniglot_tiny", "dataset.data_dir={tmp}/tfds"),
        "then pass the folder that holds them as dataset.path=DIR",
        env=(("HTTPS_PROXY", "http://127.0.0.1:9"), ("https_proxy", "http://127.0.0.1:9")),
    ),
    BadInput(
        "Hydra's record sent outside the run directory",
        ("maml-train", "hydra.run.dir={tmp}/new_run", "hydra.output_subdir=../outside"),
        "would put Hydra's record outside the run directory",
    ),
    BadInput(
        "the log file sent elsewhere",
        ("maml-train", "hydra.run.dir={tmp}/new_run", "hydra.job_logging.handlers.file.filename={tmp}/my.log"),
        "would write the log outside the run directory",
    ),
    BadInput(
        "Hydra told to change into the run directory",
        ("maml-train", "hydra.run.dir={tmp}/new_run", "hydra.job.chdir=true"),
        "hydra.job.chdir=true is not supported",
    ),
    BadInput(
        "a run directory that cannot be resolved",
        ("maml-train", "hydra.run.dir={tmp}/runs/${nope}"),
        "hydra.run.dir cannot be resolved",
    ),
    BadInput(
        "a search range in a grid sweep",
        ("maml-train", "-m", "train.outer_lr=interval(0.001,0.01)"),
        "is a search range: add search=optuna",
    ),
    BadInput(
        "glob() over a key that is no config group",
        ("maml-train", "-m", "seed=glob(*)"),
        "glob() picks options of a config group",
    ),
    BadInput(
        "a sweep into a folder of one's own files",
        ("maml-train", "-m", "seed=0,1", "hydra.sweep.dir={tmp}/folders"),
        "holds files that are not a sweep's",
    ),
    BadInput(
        "a run directory name longer than the file system allows",
        ("maml-train", "hydra.run.dir={tmp}/" + "d" * 300),
        "is longer than 255 bytes",
    ),
    BadInput(
        "a run directory behind a link to nothing",
        ("maml-train", "hydra.run.dir={tmp}/dangling/run"),
        "is a link to nothing",
    ),
    BadInput(
        "JAX told to compute in float64",
        ("maml-train", "experiment=sinusoid_tiny"),
        "JAX_ENABLE_X64=1 is not supported",
        env=(("JAX_ENABLE_X64", "1"),),
    ),
]
