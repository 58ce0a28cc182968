"""Fixtures of the pass tests."""

from tests.jobs.portal import portal

__all__ = ["portal"]
