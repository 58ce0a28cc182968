"""Everything a gateway adapter needs: the Protocol, the request and the outcomes."""

from __future__ import annotations

from collector.gateways.base import (
    ChargeRequest,
    Declined,
    DeclineKind,
    Gateway,
    GatewayContext,
    GatewayFactory,
    InDoubt,
    Outcome,
    Processing,
    Returned,
    Settlement,
    SettlementSource,
    Succeeded,
)

__all__ = [
    "ChargeRequest",
    "DeclineKind",
    "Declined",
    "Gateway",
    "GatewayContext",
    "GatewayFactory",
    "InDoubt",
    "Outcome",
    "Processing",
    "Returned",
    "Settlement",
    "SettlementSource",
    "Succeeded",
]
