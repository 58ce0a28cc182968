"""The plain suite's test_audit on the cluster: the audit's checks, clean and planted.

Its tests run here unchanged; this directory's conftest gives them the cluster's database.
"""

from __future__ import annotations

from tests.test_audit import *  # noqa: F403 - the tests, collected again here
