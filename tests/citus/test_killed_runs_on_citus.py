"""The plain suite's test_killed_runs on the cluster: collector run killed with SIGKILL, then a final pass.

Its tests run here unchanged; this directory's conftest gives them the cluster's database.
"""

from __future__ import annotations

from tests.chaos.conftest import *  # noqa: F403 - its fixtures, for the tests below
from tests.chaos.test_killed_runs import *  # noqa: F403 - the tests, collected again here
