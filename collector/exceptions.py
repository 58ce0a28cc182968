"""The engine's error tree. An exception means "this code could not do its job", never
"the bank said no": declines are values (see ``collector.gateways.base``).

    CollectorError
    ├── ConfigError            a setting is missing or wrong; the message names it
    ├── DateOutOfRange         a business date the engine may not work for (ahead of today,
    │                          or outside the banking calendar)
    ├── DatabaseError          the database cannot be reached or used
    │   └── MigrationError     the schema could not be brought up to date
    ├── GatewayError           a gateway adapter could not be built or used
    │   ├── GatewayNotFound    no adapter is registered under that name
    │   └── GatewayConfigError the adapter's own settings are wrong
    ├── Conflict               the work is held by someone else right now (API: 409)
    │   └── AlreadyAttempted   an attempt with that idempotency key exists
    ├── NotFound               no such record (API: 404)
    ├── Unprocessable          a well-formed request that cannot be done (API: 422)
    └── RetryLater             nothing was done; come back after ``retry_after_s``
        ├── RateLimited        too many requests of one customer for now (API: 429)
        └── TryAgain           a new try of the same request may succeed (API: 503)
"""

from __future__ import annotations


class CollectorError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(CollectorError):
    """A configuration value is missing or invalid."""


class DateOutOfRange(CollectorError):
    """A business date outside what the engine works for; the message says which bound."""


class DatabaseError(CollectorError):
    """The database cannot be reached or used."""


class MigrationError(DatabaseError):
    """The schema could not be brought up to date."""


class GatewayError(CollectorError):
    """A gateway adapter could not be built or used."""


class GatewayNotFound(GatewayError):
    """No gateway adapter is registered under that name."""


class GatewayConfigError(GatewayError):
    """A gateway adapter's settings are invalid."""


class Conflict(CollectorError):
    """The record is being worked on by someone else right now."""


class AlreadyAttempted(Conflict):
    """A charge attempt with that idempotency key already exists."""


class NotFound(CollectorError):
    """No such record."""


class Unprocessable(CollectorError):
    """The request is well formed but cannot be carried out; the message says why."""


class RetryLater(CollectorError):
    """Nothing was recorded or sent; the same request may be made again in
    ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(RetryLater):
    """Too many requests of one customer in the window; try again in ``retry_after_s``."""


class TryAgain(RetryLater):
    """Nothing was recorded or sent, and the same request tried again may succeed."""
