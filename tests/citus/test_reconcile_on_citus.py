"""The plain suite's test_reconcile on the cluster: reconciliation of pending and in-doubt attempts, liveness.

Its tests run here unchanged; this directory's conftest gives them the cluster's database.
"""

from __future__ import annotations

from tests.jobs.conftest import *  # noqa: F403 - its fixtures, for the tests below
from tests.jobs.test_reconcile import *  # noqa: F403 - the tests, collected again here
