"""The protocol registry: how the CLI and the GUI find protocols by name.

Built-in protocol modules are imported on first use (none imports Qt or a driver);
other packages add theirs through the ``labpcu.protocols`` entry-point group, each
entry naming a Protocol subclass (``mylab.protocols:Pulse``). Tests and scripts may
:func:`register` a class directly.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

from labpcu.protocols.base import Protocol
from labpcu.protocols.params import ParameterError

log = logging.getLogger(__name__)

#: modules whose import registers the built-in protocols
BUILTIN_MODULES: tuple[str, ...] = (
    "labpcu.protocols.characterization",
    "labpcu.protocols.programming",
    "labpcu.protocols.configure",
    "labpcu.protocols.logdomain",
    "labpcu.protocols.vmm",
    "labpcu.protocols.softmax",
    "labpcu.protocols.activation",
    "labpcu.protocols.screen",
)
ENTRY_POINT_GROUP = "labpcu.protocols"

_registry: dict[str, type[Protocol]] = {}
_loaded = False


def register(cls: type[Protocol]) -> type[Protocol]:
    """Class decorator: make a protocol known by its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, Protocol)):
        raise TypeError(f"only Protocol subclasses can be registered, not {cls!r}")
    other = _registry.get(cls.name)
    if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"protocol name {cls.name!r} is taken by {other.__module__}.{other.__qualname__}")
    _registry[cls.name] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register(ep.load())
        except Exception as exc:  # noqa: BLE001 - one broken plug-in must not hide the rest
            log.warning("protocol entry point %s failed to load: %s", ep.name, exc)


def get(name: str) -> type[Protocol]:
    """The protocol class called ``name``; a one-line error lists the known names."""
    _load()
    try:
        return _registry[name]
    except KeyError:
        raise ParameterError(f"no protocol {name!r}; known: {', '.join(sorted(_registry)) or 'none'}") from None


def names() -> list[str]:
    _load()
    return sorted(_registry)


def protocols() -> dict[str, type[Protocol]]:
    """Every known protocol, by name."""
    _load()
    return dict(sorted(_registry.items()))
