"""Strategy names used by the CLI, the simulation and ``Session(selector=...)``."""
from __future__ import annotations

_REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator: make a selector available under ``name``."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"strategy name {name!r} is already taken by {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Names of all registered strategies, sorted."""
    return sorted(_REGISTRY)


def make_selector(spec, **params):
    """Return a selector from a name (``"margin"``) or pass a selector through."""
    from .base import Selector

    if isinstance(spec, Selector):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a strategy is a name or a Selector, got {type(spec).__name__}")
    key = spec.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ValueError(f"unknown strategy {spec!r}; choose from {', '.join(available())}")
    return _REGISTRY[key](**params)


def name_of(selector) -> str:
    """Registry name of a selector instance (its class name, lower-cased, if unregistered)."""
    for key, cls in _REGISTRY.items():
        if type(selector) is cls:
            return key
    return type(selector).__name__.lower()
