"""Generated stop signals on a real maml-train process: INT, TERM, USR1, USR2 and HUP, sent one to
three times at a random moment (start-up, compiling, training, a checkpoint being saved, a
validation), a random gap apart.

The invariants:
- exit 0 (it had finished), or the code of the signal the message names (one of those sent): 130
  for SIGINT (a first one, or a second that stops at once), 75 for TERM, USR1, USR2 and HUP; never
  a traceback, a crash or a kill, except by a signal that comes before the Python interpreter has
  started (its first tens of milliseconds), which leaves nothing behind;
- a stop during training leaves a checkpoint of the step it names;
- the same command then finishes the run, which equals the uninterrupted one bit for bit.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.generated import examples
from tests.test_faults import assert_same_result, start_training, train_to_end

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    train_to_end(run_dir)
    return run_dir


def stopping_signal(sent: list[int], stderr: str) -> int:
    """The signal the command says stopped it, which must be one of those sent (Python runs the
    handlers of signals that arrive together in the order of their numbers, not of arrival)."""
    said = re.search(r"stopped (?:at step \d+ )?by (SIG\w+)|stopped at once by a second (SIGINT)", stderr)
    assert said, stderr
    signum = signal.Signals[said.group(1) or said.group(2)]
    assert signum in sent, (signum, sent)
    return signum


@pytest.mark.generated
@examples(ci=1, fuzz=60)
@given(
    sent=st.lists(st.sampled_from(SIGNALS), min_size=1, max_size=3),
    moment=st.floats(min_value=0.0, max_value=10.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=2, max_size=2),
)
def test_a_stop_signal_at_any_moment_stops_cleanly_and_the_run_resumes_exactly(uninterrupted, sent, moment, gaps):
    run_dir = Path(tempfile.mkdtemp(prefix="maml-cli-signals-")) / "run"
    try:
        check_stop_and_resume(run_dir, uninterrupted, sent, moment, gaps)
    finally:
        shutil.rmtree(run_dir.parent, ignore_errors=True)


def check_stop_and_resume(run_dir: Path, uninterrupted: Path, sent: list, moment: float, gaps: list) -> None:
    process = start_training(run_dir)
    time.sleep(moment)
    for signum, gap in zip(sent, [*gaps, 0.0]):
        if process.poll() is not None:
            break
        process.send_signal(signum)
        time.sleep(gap)
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"did not stop after {[signal.Signals(s).name for s in sent]}") from None
    code = process.returncode
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    if code == -sent[0]:  # before the interpreter was up (tens of ms): no program can answer yet
        assert not stderr and not run_dir.exists(), (code, stderr)
    elif code != 0:
        assert code == (130 if stopping_signal(sent, stderr) == signal.SIGINT else 75), (code, stderr)
        said = re.search(r"stopped at step (\d+) by (\w+); checkpoint saved", stderr)
        if said and "stopped at once" not in stderr:  # stopped in the loop: the step it names is saved
            steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
            assert steps[-1] == int(said.group(1)), (steps, stderr)
    train_to_end(run_dir)  # the same command again
    assert_same_result(run_dir, uninterrupted)
