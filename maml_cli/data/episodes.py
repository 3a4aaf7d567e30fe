"""The task batch that flows from a sampler into the meta-learning math."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from maml_cli.errors import UserError


class Episodes(NamedTuple):
    """A batch of tasks, each array with a leading task axis.

    Classification: ``support_x`` is [tasks, ways * shots, H, W, C] and ``support_y`` integer labels
    [tasks, ways * shots]. Regression: ``support_x`` [tasks, shots, 1] and ``support_y`` the same.
    One task is the same structure without the leading axis.
    """

    support_x: jax.Array
    support_y: jax.Array
    query_x: jax.Array
    query_y: jax.Array


class TaskSpec(NamedTuple):
    """What a model and a loss need to know about a dataset's tasks."""

    input_shape: tuple  # shape of one example
    output_dim: int  # regression outputs, or classes per task
    kind: str  # "regression" | "classification"

    @property
    def metric(self) -> str:
        return "mse" if self.kind == "regression" else "accuracy"


def task_part(tasks, part):
    """Of the pytree ``tasks`` (leading task axis), the ``part = (index, parts)`` share: tasks
    ``index * n .. (index + 1) * n - 1`` with ``n = tasks / parts``; ``index`` may be traced (a
    device's position on the mesh). None: all of them."""
    if part is None:
        return tasks
    index, parts = part
    size = jax.tree.leaves(tasks)[0].shape[0] // parts
    return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, index * size, size), tasks)


def sample_classification_episodes(
    images: jax.Array,
    classes: jax.Array,
    key: jax.Array,
    num_tasks: int,
    *,
    ways: int,
    shots: int,
    query_shots: int,
    rotate: bool = False,
    part=None,
    offsets=None,
    counts=None,
    max_count: int = 0,
) -> Episodes:
    """N-way K-shot tasks from ``images`` uint8 [all classes, examples, H, W, C], or, with
    ``offsets`` and ``counts`` (classes of different sizes), from ``images`` [all images, H, W, C]
    where class c holds images ``offsets[c] .. offsets[c] + counts[c] - 1`` and ``max_count`` (static)
    is the largest count.

    Each task draws ``ways`` distinct classes from ``classes`` (the split's class indices) and,
    per class, ``shots + query_shots`` distinct examples, so support and query never share an
    image. Labels are 0..ways-1 in the order the classes were drawn (itself random). With
    ``rotate``, every class of a task is turned by its own random multiple of 90 degrees (the
    Omniglot augmentation of Santoro et al. and Finn et al.). Pixels come out as floats in [0, 1].
    """

    per_class = shots + query_shots

    def draw(k_examples, chosen):
        if counts is None:
            num_examples = images.shape[1]
            examples = jax.vmap(lambda k: jax.random.permutation(k, num_examples)[:per_class])(
                jax.random.split(k_examples, ways)
            )
            return images[chosen[:, None], examples]

        # Distinct examples below each class's count: those with the smallest random keys.
        def one_class(k, c):
            u = jax.random.uniform(k, (max_count,))
            u = jnp.where(jnp.arange(max_count) < counts[c], u, 2.0)
            return offsets[c] + jax.lax.top_k(-u, per_class)[1]

        return images[jax.vmap(one_class)(jax.random.split(k_examples, ways), chosen)]

    def one_task(task_key):
        k_classes, k_examples, k_rot = jax.random.split(task_key, 3)
        chosen = jax.random.choice(k_classes, classes, (ways,), replace=False)
        x = draw(k_examples, chosen)  # [ways, per_class, H, W, C]
        if rotate:
            turns = jax.random.randint(k_rot, (ways,), 0, 4)
            rotations = [lambda a, k=k: jnp.rot90(a, k, axes=(1, 2)) for k in range(4)]
            x = jax.vmap(lambda a, t: jax.lax.switch(t, rotations, a))(x, turns)
        x = x.astype(jnp.float32) / 255.0
        labels = jnp.arange(ways, dtype=jnp.int32)
        return Episodes(
            support_x=x[:, :shots].reshape(ways * shots, *x.shape[2:]),
            support_y=jnp.repeat(labels, shots),
            query_x=x[:, shots:].reshape(ways * query_shots, *x.shape[2:]),
            query_y=jnp.repeat(labels, query_shots),
        )

    # Each task has its own key, so a device asked for its ``part`` draws only its own tasks.
    return jax.vmap(one_task)(task_part(jax.random.split(key, num_tasks), part))


def check_task_shape(
    ways: int,
    shots: int,
    query_shots: int,
    split_classes: dict,
    counts,
    what: str,
    shots_from: str = "dataset.shots + dataset.query_shots",
    names=None,
    allow_empty_splits: bool = False,
) -> None:
    """Fail before training when the splits cannot supply the asked-for tasks. ``counts``: the
    examples of every class (an int when all classes hold the same number); ``names``: the
    classes' names, to say which are too small."""

    problems = []
    per_class = shots + query_shots
    for split, classes in split_classes.items():
        if len(classes) == 0 and allow_empty_splits:
            continue
        if len(classes) < ways:
            problems.append(f"the {split} split has {len(classes)} classes, fewer than dataset.ways={ways}")
    if np.isscalar(counts):
        if per_class > counts:
            problems.append(f"{shots_from} = {per_class}, but each {what} class has only {counts} examples")
    else:
        used = np.unique(np.concatenate([np.asarray(c, dtype=np.int64) for c in split_classes.values()]))
        small = [int(c) for c in used if counts[c] < per_class]
        if small:
            shown = ", ".join(f"{names[c] if names else c} ({counts[c]})" for c in small[:5])
            problems.append(
                f"{shots_from} = {per_class}, but {len(small)} class{'es' if len(small) > 1 else ''} of "
                f"{what} {'hold' if len(small) > 1 else 'holds'} fewer images: {shown}"
                f"{', ...' if len(small) > 5 else ''}; add images, "
                "remove those classes or ask for fewer shots"
            )
    if problems:
        raise UserError(f"impossible {ways}-way {shots}-shot tasks for {what}: " + "; ".join(problems))


class ImageClassTasks:
    """N-way K-shot tasks over ``images`` [classes, examples, H, W, C] uint8 and a class split, or
    over ``images`` [all images, H, W, C] with per-class ``counts`` (classes of different sizes).
    Checks at construction (before anything compiles) that the splits can supply the tasks."""

    allow_empty_splits = False  # True: a split with no classes is fine until it is asked for (``require``)

    def __init__(self, cfg, images, splits: dict, *, rotate: bool, what: str, counts=None, class_names=None):

        if counts is not None and len(set(np.asarray(counts).tolist())) == 1:  # all alike: the dense layout
            images, counts = images.reshape(len(counts), int(counts[0]), *images.shape[1:]), None
        self.cfg, self.splits, self.rotate, self.what = cfg, splits, rotate, what
        self.class_names = class_names
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        self.max_count = images.shape[1] if counts is None else int(self.counts.max())
        self.check()
        shape = tuple(images.shape[2:] if counts is None else images.shape[1:])
        self.spec = TaskSpec(input_shape=shape, output_dim=cfg.ways, kind="classification")
        self.data = {
            "images": jnp.asarray(images),
            **{name: jnp.asarray(idx, jnp.int32) for name, idx in splits.items()},
        }
        if counts is not None:
            offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
            self.data.update(offsets=jnp.asarray(offsets, jnp.int32), counts=jnp.asarray(self.counts, jnp.int32))

    def check(self, shots=None, query_shots=None, shots_from: str = "dataset.shots + dataset.query_shots") -> None:
        """Fail (UserError) unless every split can supply tasks of this shape (None: the dataset's)."""
        c = self.cfg
        check_task_shape(
            c.ways,
            c.shots if shots is None else shots,
            c.query_shots if query_shots is None else query_shots,
            self.splits,
            self.max_count if self.counts is None else self.counts,
            self.what,
            shots_from,
            names=self.class_names,
            allow_empty_splits=self.allow_empty_splits,
        )

    def require(self, *splits: str) -> None:
        """Fail (UserError) unless each of ``splits`` has at least ``ways`` classes."""

        for split in splits:
            if len(self.splits[split]) < self.cfg.ways:
                raise UserError(
                    f"the {split} split of {self.what} has {len(self.splits[split])} classes, fewer than "
                    f"dataset.ways={self.cfg.ways} (see dataset.train_classes / val_classes, or the "
                    f"{split}/ folder)"
                )

    def sample(self, data, key, split: str, num_tasks: int, shots=None, query_shots=None, part=None) -> Episodes:
        """``shots`` / ``query_shots`` replace the dataset's for this call (None: keep them);
        ``part = (index, parts)``: only that share of the ``num_tasks`` tasks (``task_part``)."""
        c = self.cfg
        return sample_classification_episodes(
            data["images"],
            data[split],
            key,
            num_tasks,
            ways=c.ways,
            shots=c.shots if shots is None else shots,
            query_shots=c.query_shots if query_shots is None else query_shots,
            rotate=self.rotate,
            part=part,
            offsets=data.get("offsets"),
            counts=data.get("counts"),
            max_count=self.max_count,
        )
