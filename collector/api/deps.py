"""What handlers receive: the pool, the gateways, the settings and the business date."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from collector.config import Settings
from collector.gateways.base import Gateway


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _gateways(request: Request) -> Mapping[str, Gateway]:
    gateways: Mapping[str, Gateway] = request.app.state.gateways
    return gateways


def _today(request: Request) -> date:
    # Business dates are the lessor's local dates; tests pin the clock through app.state.
    clock = request.app.state.clock
    now: datetime = clock()
    return now.astimezone(_settings(request).zone).date()


PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]
SettingsDep = Annotated[Settings, Depends(_settings)]
GatewaysDep = Annotated[Mapping[str, Gateway], Depends(_gateways)]
TodayDep = Annotated[date, Depends(_today)]
