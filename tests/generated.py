"""Generated inputs (Hypothesis): the two profiles every property test runs under.

- ``ci`` (the default run): a fixed seed (``derandomize``) and few examples per test, so the
  generated tests are repeatable and cost under a minute in all.
- ``fuzz`` (``python -m pytest -m fuzz``): many examples, a fresh random seed per run (Hypothesis
  prints the seed and the shrunk failing example), about an hour in all.

A property test is marked ``@pytest.mark.generated`` and takes its settings from ``examples(ci=N,
fuzz=M)``; ``conftest.py`` adds the ``fuzz`` marker to every ``generated`` test and picks the
profile from ``-m``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

FUZZ_ENV = "MAML_CLI_FUZZ"  # set by conftest.py when the run selects -m fuzz
SEED = 20261207  # the ci profile's examples follow from the test's name and this project's seed


def fuzzing() -> bool:
    return os.environ.get(FUZZ_ENV) == "1"


def examples(ci: int, fuzz: int, **overrides) -> settings:
    """Settings for a property test: ``ci`` examples under the default profile, ``fuzz`` under
    ``-m fuzz``. No deadline (the tools compile on first use), no example database written into
    the checkout."""
    common = {
        "deadline": None,
        "database": None,
        "suppress_health_check": [
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
        ],
        "print_blob": True,
    }
    # No shrinking: a test that starts commands takes minutes to shrink, and the failing example
    # is printed whole with the seed (or blob) that reruns it.
    common["phases"] = [p for p in Phase if p != Phase.shrink]
    if fuzzing():
        return settings(max_examples=fuzz, derandomize=False, **{**common, **overrides})
    return settings(max_examples=ci, derandomize=True, **{**common, **overrides})
