"""The plain suite's test_collect on the cluster: the pass: claim, charge, record, exactly once.

Its tests run here unchanged; this directory's conftest gives them the cluster's database.
"""

from __future__ import annotations

import pytest

from tests.jobs.conftest import *  # noqa: F403 - its fixtures, for the tests below
from tests.jobs.test_collect import *  # noqa: F403 - the tests, collected again here


# In place of the plain module's test of the same name: this directory empties the cluster's
# tables between tests (it does not make a database per test), so a table that was never
# analyzed cannot be set up here. On Citus the pass's ANALYZE of a distributed table reaches
# every shard; the check that asks whether one is needed reads the coordinator's table.
@pytest.mark.skip(reason="needs a never-analyzed table; the cluster's tables persist between tests")
def test_a_pass_gives_the_planner_statistics_it_never_had() -> None:
    """Skipped on Citus (see the comment above)."""
