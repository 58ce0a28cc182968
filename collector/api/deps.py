"""What handlers receive: the pool, the gateways, the settings, the business date and the
leases' customers (collector.db.portal.LeaseOwners).

Each is an ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, and four
thread hops a request cost manual pay most of its tail latency (p99 130-250 ms at 200/s).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from collector.config import Settings
from collector.db.portal import LeaseOwners
from collector.gateways.base import Gateway


async def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _gateways(request: Request) -> Mapping[str, Gateway]:
    gateways: Mapping[str, Gateway] = request.app.state.gateways
    return gateways


async def _lease_owners(request: Request) -> LeaseOwners:
    # One per application (per pool): which customer each lease belongs to, once read.
    owners: LeaseOwners = request.app.state.lease_owners
    return owners


async def _today(request: Request) -> date:
    # Business dates are the lessor's local dates; tests pin the clock through app.state.
    clock = request.app.state.clock
    now: datetime = clock()
    settings: Settings = request.app.state.settings
    return now.astimezone(settings.zone).date()


PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]
SettingsDep = Annotated[Settings, Depends(_settings)]
GatewaysDep = Annotated[Mapping[str, Gateway], Depends(_gateways)]
TodayDep = Annotated[date, Depends(_today)]
LeaseOwnersDep = Annotated[LeaseOwners, Depends(_lease_owners)]
