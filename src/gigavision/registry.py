"""Named entries of one kind — image readers, formats, merge strategies, tasks, job kinds, engine outputs.

One shape for every "pick an implementation by name" table, so each one lists its names the same way,
refuses an unknown name with the same message (naming the known ones), and can defer imports: an entry may
be a ``"module:attribute"`` path, imported on first use, so ``gigavision --help`` and the tile server do
not import every stage (and a lower layer can name code of an upper one without importing it).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from gigavision.errors import GigavisionError, InvalidInput

T = TypeVar("T")


def import_path(path: str) -> Any:
    """The object a ``"package.module:attribute"`` path names."""
    module, sep, attribute = path.partition(":")
    if not sep or not module or not attribute:
        raise InvalidInput(f"{path!r} is not a 'module:attribute' path")
    return getattr(importlib.import_module(module), attribute)


class Registry(Mapping[str, T], Generic[T]):
    """A read-only mapping name → entry, filled by ``add`` (or a decorator built on it).

    ``what`` names the kind in messages ("format", "merge method"). ``builtins``: a module imported before
    the first lookup, whose import registers the built-in entries (readers register themselves that way).
    ``error``: the exception an unknown name raises (``InvalidInput`` unless the kind has its own).
    """

    def __init__(self, what: str, *, builtins: str | None = None, error: type[GigavisionError] = InvalidInput) -> None:
        self.what = what
        self._builtins = builtins
        self._error = error
        self._entries: dict[str, T] = {}
        self._loaded: dict[str, Any] = {}
        # other threads wait while the built-ins are imported (a half-filled table would refuse known names);
        # re-entrant, because that import calls add() on this thread
        self._lock = threading.RLock()
        self._loading = False

    def add(self, name: str, entry: T) -> T:
        """Register (or replace) ``entry`` under ``name``; returns it, so decorators can pass it through."""
        self._entries[name] = entry
        self._loaded.pop(name, None)
        return entry

    def discard(self, name: str) -> None:
        """Remove ``name`` if registered (a plugin unloading, a test cleaning up)."""
        self._entries.pop(name, None)
        self._loaded.pop(name, None)

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@REGISTRY.decorator("name")`` registers the decorated function or class as it is."""
        return lambda entry: self.add(name, entry)

    def resolve(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name raises, listing the known ones."""
        self._load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise self._error(f"unknown {self.what} {name!r}; known: {known}") from None

    def load(self, name: str) -> Any:
        """``resolve``, then import a ``"module:attribute"`` entry (once) and return what it names."""
        if name not in self._loaded:
            entry = self.resolve(name)
            self._loaded[name] = import_path(entry) if isinstance(entry, str) else entry
        return self._loaded[name]

    def _load_builtins(self) -> None:
        if self._builtins is None:
            return
        with self._lock:
            if self._builtins is None or self._loading:  # done meanwhile, or this thread is importing them
                return
            self._loading = True
            try:
                importlib.import_module(self._builtins)
                self._builtins = None
            finally:
                self._loading = False

    def __getitem__(self, name: str) -> T:
        self._load_builtins()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self._load_builtins()
        return iter(self._entries)

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {sorted(self._entries)})"
