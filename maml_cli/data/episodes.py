"""The task batch that flows from a sampler into the meta-learning math."""

from __future__ import annotations

from typing import NamedTuple

import jax


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


def sample_classification_episodes(images: jax.Array, classes: jax.Array, key: jax.Array, num_tasks: int, *,
                                   ways: int, shots: int, query_shots: int, rotate: bool = False,
                                   part=None) -> Episodes:
    """N-way K-shot tasks from ``images`` uint8 [all classes, examples, H, W, C].

    Each task draws ``ways`` distinct classes from ``classes`` (the split's class indices) and,
    per class, ``shots + query_shots`` distinct examples, so support and query never share an
    image. Labels are 0..ways-1 in the order the classes were drawn (itself random). With
    ``rotate``, every class of a task is turned by its own random multiple of 90 degrees (the
    Omniglot augmentation of Santoro et al. and Finn et al.). Pixels come out as floats in [0, 1].
    """
    import jax.numpy as jnp

    per_class = shots + query_shots
    num_examples = images.shape[1]

    def one_task(task_key):
        k_classes, k_examples, k_rot = jax.random.split(task_key, 3)
        chosen = jax.random.choice(k_classes, classes, (ways,), replace=False)
        examples = jax.vmap(lambda k: jax.random.permutation(k, num_examples)[:per_class])(
            jax.random.split(k_examples, ways))
        x = images[chosen[:, None], examples]  # [ways, per_class, H, W, C]
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


def check_task_shape(ways: int, shots: int, query_shots: int, split_classes: dict, examples_per_class: int,
                     what: str, shots_from: str = "dataset.shots + dataset.query_shots") -> None:
    """Fail before training when the splits cannot supply the asked-for tasks."""
    from maml_cli.config import UserError

    problems = []
    for split, classes in split_classes.items():
        if len(classes) < ways:
            problems.append(f"the {split} split has {len(classes)} classes, fewer than dataset.ways={ways}")
    if shots + query_shots > examples_per_class:
        problems.append(
            f"{shots_from} = {shots + query_shots}, but each {what} class has only {examples_per_class} examples")
    if problems:
        raise UserError(f"impossible {ways}-way {shots}-shot tasks for {what}: " + "; ".join(problems))


class ImageClassTasks:
    """N-way K-shot tasks over ``images`` [classes, examples, H, W, C] uint8 and a class split.
    Checks at construction (before anything compiles) that the splits can supply the tasks."""

    def __init__(self, cfg, images, splits: dict, *, rotate: bool, what: str):
        import jax.numpy as jnp

        self.cfg, self.splits, self.rotate, self.what = cfg, splits, rotate, what
        self.examples_per_class = images.shape[1]
        self.check()
        self.spec = TaskSpec(input_shape=tuple(images.shape[2:]), output_dim=cfg.ways, kind="classification")
        self.data = {"images": jnp.asarray(images),
                     **{name: jnp.asarray(idx, jnp.int32) for name, idx in splits.items()}}

    def check(self, shots=None, query_shots=None, shots_from: str = "dataset.shots + dataset.query_shots") -> None:
        """Fail (UserError) unless every split can supply tasks of this shape (None: the dataset's)."""
        c = self.cfg
        check_task_shape(c.ways, c.shots if shots is None else shots,
                         c.query_shots if query_shots is None else query_shots, self.splits,
                         self.examples_per_class, self.what, shots_from)

    def sample(self, data, key, split: str, num_tasks: int, shots=None, query_shots=None, part=None) -> Episodes:
        """``shots`` / ``query_shots`` replace the dataset's for this call (None: keep them);
        ``part = (index, parts)``: only that share of the ``num_tasks`` tasks (``task_part``)."""
        c = self.cfg
        return sample_classification_episodes(
            data["images"], data[split], key, num_tasks, ways=c.ways, shots=c.shots if shots is None else shots,
            query_shots=c.query_shots if query_shots is None else query_shots, rotate=self.rotate, part=part)
