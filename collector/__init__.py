"""collector: an async batch payment-collection engine for lease-to-own installments."""

from __future__ import annotations

__version__ = "0.1.0"
