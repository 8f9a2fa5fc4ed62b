"""The fuzz suite's bounded budget: a few dozen examples per property by default (the
whole suite runs in well under a minute in ``make test``); ``ENGRAM_FUZZ_EXAMPLES=2000``
for a long run. No example database is written into the tree."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("ENGRAM_FUZZ_EXAMPLES", "30"))


def budget(scale: float = 1.0) -> settings:
    """Hypothesis settings for one property: ``scale`` x the suite's example budget."""
    return settings(
        max_examples=max(3, int(EXAMPLES * scale)),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
