"""The plain suite's test_payments on the cluster: manual pay through the portal API.

Its tests run here unchanged; this directory's conftest gives them the cluster's database.
"""

from __future__ import annotations

from tests.api.conftest import *  # noqa: F403 - its fixtures, for the tests below
from tests.api.test_payments import *  # noqa: F403 - the tests, collected again here
