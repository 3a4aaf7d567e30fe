"""Orbax checkpoints of the TrainState: atomic saves, keep the last N and the N best by validation,
restore the latest good one."""

from __future__ import annotations

import dataclasses
import errno
import logging
import shutil
import time
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from maml_cli import stop_signals
from maml_cli.run.directory import finished_steps, is_being_trained
from maml_cli.run.provenance import PROVENANCE, CheckpointError, CheckpointMissing, check_provenance
from maml_cli.run.selection import best_of

log = logging.getLogger(__name__)


ITEM = "default"  # the folder of a step that holds the state


@dataclasses.dataclass
class _KeepBest(ocp.checkpoint_managers.PreservationPolicy):
    """Preserve the ``n`` steps with the best ranking score in ``scores`` (``selection.best_of``).
    Orbax's own BestN is not used: the pinned Orbax (0.12) does not keep a checkpoint's metrics
    across sessions (a resumed manager saw none and kept the wrong steps: tests/test_checkpoints.py),
    so the scores live with the trainer, which reads them from metrics.jsonl on resume."""

    scores: dict
    n: int

    def should_preserve(self, checkpoints, *, context):
        best = set(best_of(self.scores, self.n))
        return [info.step in best for info in checkpoints]


class Checkpointer:
    def __init__(
        self,
        directory: Path,
        keep: int = 3,
        read_only: bool = False,
        keep_best: int = 0,
        provenance: dict | None = None,
    ):
        # Orbax wants absolute paths; saves go to a temporary folder renamed on success, so a run
        # killed mid-save leaves the previous checkpoints intact. ``read_only``: a reader (maml-eval)
        # beside a live trainer. It has no CheckpointManager: the manager stats every step folder
        # when it lists them, and fails when the trainer deletes one in between.
        # Kept: the last ``keep``, and the ``keep_best`` saved with the highest validation score
        # (what ``maml-eval checkpoint=best:N`` reads; ``rank_by`` gives those of earlier sessions).
        self.directory = Path(directory).absolute()
        self.provenance = provenance  # saved with every checkpoint (PROVENANCE)
        self._best = _KeepBest(scores={}, n=keep_best)
        policy = ocp.checkpoint_managers.AnyPreservationPolicy([ocp.checkpoint_managers.LatestN(n=keep), self._best])
        self._manager = (
            None
            if read_only
            else ocp.CheckpointManager(
                self.directory, options=ocp.CheckpointManagerOptions(create=True, preservation_policy=policy)
            )
        )

    def rank_by(self, scores: dict) -> None:
        """The ranking scores (step -> score) of the checkpoints earlier sessions saved
        (``selection.validation_scores``), which the best ``keep_best`` are chosen by."""
        self._best.scores = dict(scores)

    def steps(self) -> list:
        if self._manager is None:
            return finished_steps(self.directory)
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state, score: float | None = None) -> None:
        """Write the checkpoint of ``step`` and wait for it; ``score``: its validation result, higher
        is better (it competes for the best ``keep_best``). A write that fails (disk full, read-only
        folder) is a CheckpointError; the checkpoints already there stay readable."""
        if self._manager is None:
            raise TypeError("a read-only Checkpointer cannot save")
        if step in self._manager.all_steps():
            return
        try:
            if score is not None:
                self._best.scores[step] = float(score)
            items = {ITEM: ocp.args.StandardSave(state)}
            if self.provenance is not None:
                items[PROVENANCE] = ocp.args.JsonSave(self.provenance)
            with stop_signals.deferred():  # a stop waits for a checkpoint being written (milliseconds)
                self._manager.save(step, args=ocp.args.Composite(**items))
                self._manager.wait_until_finished()
        except Exception as e:
            cause = _os_error(e)
            if cause is None:
                raise
            raise CheckpointError(
                f"cannot write checkpoint {step} to {self.directory} ({cause.strerror or cause}); "
                f"the checkpoints already there ({', '.join(map(str, self.steps())) or 'none'}) are intact. "
                + ("Free some space" if cause.errno == errno.ENOSPC else "Make the folder writable")
                + " and run the same command to resume."
            ) from e

    def restore(self, template, step: int | None = None, attempts: int = 5, expect: tuple | None = None):
        """Restore into the structure, dtypes and devices of ``template`` (a state or its abstract
        shapes). Raises CheckpointError naming the file and the steps that exist; with ``expect``
        (config, run id), CheckpointMismatch for a checkpoint of another config or run.

        While another process trains the run, the checkpoint being read may be replaced under the
        reader (the trainer keeps only the last N): then the newest one is read again, a few times. A
        given ``step`` that is gone (CheckpointMissing) is not waited for: the caller chooses again
        (``runs.restore_chosen``)."""
        for attempt in range(attempts):
            try:
                return self._restore(template, step, expect)
            except CheckpointMissing:
                if step is not None or attempt == attempts - 1 or not is_being_trained(self.directory.parent):
                    raise
            except CheckpointError as e:
                if step is not None and step not in self.steps():  # deleted while it was read
                    raise CheckpointMissing(
                        f"checkpoint {self.directory / str(step)} was deleted while it was read; available: "
                        f"{', '.join(map(str, self.steps())) or 'none'}"
                    ) from e
                if attempt == attempts - 1 or not is_being_trained(self.directory.parent):
                    raise
            time.sleep(0.2 * (attempt + 1))

    def _restore(self, template, step: int | None, expect: tuple | None = None):
        steps = self.steps()
        if not steps:
            raise CheckpointMissing(f"no checkpoints in {self.directory}")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise CheckpointMissing(
                f"no checkpoint for step {step} in {self.directory}; available: {', '.join(map(str, steps))}"
            )
        if expect is not None:
            check_provenance(self.directory / str(step), *expect)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        absl = logging.getLogger("absl")
        level = absl.level
        absl.setLevel(logging.CRITICAL)  # Orbax logs what it then raises; our error says it once
        try:
            # The item folder directly: a reader beside a live trainer must not depend on the
            # step-level metadata the trainer may still be writing after the atomic rename.
            with ocp.StandardCheckpointer() as reader:
                return reader.restore(self.directory / str(step) / ITEM, abstract)
        except Exception as e:  # orbax raises many kinds for damaged or mismatched files
            reason = str(e).split(" [tensorstore_spec")[0].strip().splitlines()
            reason = (reason[0] if reason else "")[:300]
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} cannot be read ({type(e).__name__}: {reason}); "
                "it may be damaged or from another config: delete it or pick another with checkpoint=STEP "
                f"(available: {', '.join(map(str, steps))})"
            ) from e
        finally:
            absl.setLevel(level)

    def restore_latest_good(self, template):
        """Newest checkpoint that reads. A damaged one is moved to ``damaged_checkpoints/`` beside
        the checkpoints folder (with a warning), so its step is trained and saved again. Returns
        (state, step) or (None, None) where none reads. (Checkpoints of another config or run are
        refused before this, by ``provenance.check_resumable``.)"""
        for step in reversed(self.steps()):
            try:
                return self.restore(template, step), step
            except CheckpointError as e:
                aside = self.directory.parent / "damaged_checkpoints" / f"{step}"
                shutil.rmtree(aside, ignore_errors=True)
                aside.parent.mkdir(exist_ok=True)
                shutil.move(str(self.directory / str(step)), str(aside))
                if self._manager is not None:
                    self._manager.reload()
                log.warning("skipping unreadable checkpoint (moved to %s): %s", aside, e)
        return None, None

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()


def _os_error(e: BaseException):
    """The OSError behind ``e`` (Orbax wraps them), or None."""
    while e is not None:
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
    return None
