"""Gateway adapters by name: the ``collector.gateways`` entry points, then the built-in sandbox.

An adapter package registers a :data:`~collector.gateways.base.GatewayFactory` under the entry
point group ``collector.gateways``; the engine opens whichever names its settings list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from importlib import import_module
from importlib.metadata import entry_points
from typing import Final, cast

from collector.exceptions import GatewayError, GatewayNotFound
from collector.gateways.base import Gateway, GatewayContext, GatewayFactory

ENTRY_POINT_GROUP: Final = "collector.gateways"

# Found even when the package runs from a source tree without installed metadata. Imported
# only when named: the Stripe SDK alone costs a pass process some 30 MB it may never use.
_BUILTIN: Final[dict[str, str]] = {
    "sandbox_card": "collector.gateways.sandbox:open_sandbox_card",
    "sandbox_ach": "collector.gateways.sandbox:open_sandbox_ach",
    "nacha": "collector.gateways.nacha_files:open_nacha",
    "stripe_card": "collector.gateways.stripe:open_stripe_card",
    "stripe_ach": "collector.gateways.stripe:open_stripe_ach",
    "memory_card": "collector.gateways.memory:open_memory_card",
    "memory_ach": "collector.gateways.memory:open_memory_ach",
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
    module, _, attribute = builtin.partition(":")
    return cast(GatewayFactory, getattr(import_module(module), attribute))


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
