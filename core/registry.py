"""Named registries: each pluggable kind (backbones, KD modes, input formats, stages) registers
its implementations once, and config validation, ``--help`` choices and the builders all read
the names from the registry instead of repeating a list.

A registry that the config names lives in the kernel (``core.registries``), so the config can
refer to it without importing a layer above; the implementations register themselves where they
are defined (``@BACKBONES.register("mmoe")`` in ``models/backbones.py``), and a registry is filled
when the modules that define them are imported. The command line imports them before it reads
the config (``pipeline/cli.py``), so a wrong name fails at once with the list of names; a caller
of ``core.config`` alone gets the same ``ConfigError`` from ``get`` when the model is built.

Example::

    >>> SHAPES = Registry("shape", "example.shape")
    >>> @SHAPES.register("square")
    ... def square(n):
    ...     return n * n
    >>> SHAPES.get("square")(3), SHAPES.names()
    (9, ['square'])
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from core.errors import ConfigError


def _qualified(obj) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"


class Registry:
    """Name -> implementation, filled by ``register`` where each implementation is defined.

    Args:
      kind: what is registered, for messages ("backbone").
      key: the dotted config key that chooses one ("model.backbone"), for ``ConfigError``s.
    """

    def __init__(self, kind: str, key: str):
        self.kind = kind
        self.key = key
        self._entries: dict[str, Any] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[Any], Any]:
        """Decorator: registers the decorated class or function under ``name`` (once)."""

        def add(obj):
            self.add(name, obj, help)
            return obj

        return add

    def add(self, name: str, obj: Any, help: str = "") -> None:
        """Registers ``obj`` under ``name``; a second registration of a name is a bug and raises."""
        if not name or not isinstance(name, str):
            raise ValueError(f"`name` must be a non-empty string. Received: name={name!r}")
        old = self._entries.get(name)
        if old is not None and _qualified(old) != _qualified(obj):
            raise ValueError(f"{self.kind} {name!r} is registered twice ({self._entries[name]!r} and {obj!r})")
        self._entries[name] = obj
        self._help[name] = help or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def help(self, name: str) -> str:
        return self._help[name]

    def get(self, name: str) -> Any:
        """The implementation of ``name``; ``ConfigError`` naming the config key and the choices."""
        if name not in self._entries:
            raise ConfigError(f"{self.key}: expected one of {self.names()}, got {name!r}")
        return self._entries[name]

    def check(self, name: str) -> str:
        """``name`` if it is registered, else ``ConfigError`` (as ``get``)."""
        self.get(name)
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
