"""The plain suite's test_run_rows on the cluster: the runs' rows.

Its tests run here unchanged; this directory's conftest gives them the cluster's database.
"""

from __future__ import annotations

from tests.jobs.conftest import *  # noqa: F403 - its fixtures, for the tests below
from tests.jobs.test_run_rows import *  # noqa: F403 - the tests, collected again here
