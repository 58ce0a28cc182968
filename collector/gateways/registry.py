"""Gateway adapters by name: the ``collector.gateways`` entry points, then the built-in sandbox.

An adapter package registers a :data:`~collector.gateways.base.GatewayFactory` under the entry
point group ``collector.gateways``; the engine opens whichever names its settings list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import entry_points
from typing import Final, cast

from collector.exceptions import GatewayError, GatewayNotFound
from collector.gateways.base import Gateway, GatewayContext, GatewayFactory
from collector.gateways.sandbox import open_sandbox_ach, open_sandbox_card

ENTRY_POINT_GROUP: Final = "collector.gateways"

# Found even when the package runs from a source tree without installed metadata.
_BUILTIN: Final[dict[str, GatewayFactory]] = {
    "sandbox_card": open_sandbox_card,
    "sandbox_ach": open_sandbox_ach,
}


def available_gateways() -> list[str]:
    """Every name an adapter is registered under, sorted."""
    names = {entry_point.name for entry_point in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names | _BUILTIN.keys())


def _find_factory(name: str) -> GatewayFactory:
    for entry_point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            factory = entry_point.load()
        except Exception as exc:
            raise GatewayError(f"gateway {name!r} could not be loaded") from exc
        if not callable(factory):
            raise GatewayError(f"gateway {name!r} is registered to something not callable")
        return cast(GatewayFactory, factory)
    builtin = _BUILTIN.get(name)
    if builtin is None:
        known = ", ".join(available_gateways())
        raise GatewayNotFound(f"no gateway adapter is registered as {name!r}; known: {known}")
    return builtin


@asynccontextmanager
async def open_gateways(
    names: Sequence[str], make_context: Callable[[str], GatewayContext]
) -> AsyncIterator[dict[str, Gateway]]:
    """Open every named gateway and yield them by name, closing all on exit; raise
    GatewayNotFound for a name no adapter is registered under."""
    # Resolve every name before opening anything, so a typo opens no connections.
    factories = {name: _find_factory(name) for name in dict.fromkeys(names)}
    async with AsyncExitStack() as stack:
        gateways: dict[str, Gateway] = {}
        for name, factory in factories.items():
            gateways[name] = await stack.enter_async_context(factory(make_context(name)))
        yield gateways
