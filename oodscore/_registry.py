"""One small typed registry, one instance per component kind (scorers, regularizers)."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


class Registry(Generic[T]):
    """Maps snake_case names to classes of one kind.

    Args:
        kind: What the registry holds, in words ("scorer"); used in error messages.

    Examples:
        >>> registry: Registry[object] = Registry("widget")
        >>> @registry.register("round_widget")
        ... class RoundWidget:
        ...     pass
        >>> registry.names()
        ['round_widget']
        >>> type(registry.create("round_widget")).__name__
        'RoundWidget'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator that registers the class under ``name``.

        Raises:
            ValueError: If ``name`` is not snake_case or is already taken.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"Expected the {self.kind} name to be snake_case (e.g. 'joint_energy'), "
                f"got {name!r}."
            )

        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ValueError(
                    f"A {self.kind} named {name!r} is already registered "
                    f"({self._entries[name].__qualname__}); choose another name."
                )
            cls.name = name  # type: ignore[attr-defined]
            self._entries[name] = cls
            return cls

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for plugins and tests that register temporary entries)."""
        self.get_class(name)
        del self._entries[name]

    def get_class(self, name: str) -> type[T]:
        """The class registered under ``name``.

        Raises:
            ValueError: If no such name is registered; the message lists close matches.
        """
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            known = ", ".join(sorted(self._entries))
            raise ValueError(f"Unknown {self.kind} {name!r}.{hint} Known: {known}.") from None

    def create(self, name: str, **params: Any) -> T:
        """An instance of the class registered under ``name``, built with ``params``."""
        return self.get_class(name)(**params)

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching the fnmatch ``pattern``."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
