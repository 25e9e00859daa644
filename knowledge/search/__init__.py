"""Search backends, chosen in settings (like Django's cache framework).

``SEARCH_BACKENDS`` maps an alias to ``{"BACKEND": "<dotted module>", ...options}``;
the module exposes ``SearchBackend``. ``SEARCH_BACKEND`` names the alias in use.
Backends are built once per process and alias (they hold connection pools).
"""

from __future__ import annotations

import threading
from importlib import import_module
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from knowledge.search.base import BaseSearchBackend

_backends: dict[str, BaseSearchBackend] = {}
_lock = threading.Lock()


def load_backend(path: str, params: dict[str, Any]) -> BaseSearchBackend:
    try:
        module = import_module(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"Search backend module {path!r} cannot be imported: {exc}") from exc
    cls = getattr(module, "SearchBackend", None)
    if cls is None or not (isinstance(cls, type) and issubclass(cls, BaseSearchBackend)):
        raise ImproperlyConfigured(f"{path!r} does not define SearchBackend (a BaseSearchBackend subclass).")
    return cls(params)


def get_search_backend(alias: str | None = None) -> BaseSearchBackend:
    alias = alias or settings.SEARCH_BACKEND
    backend = _backends.get(alias)
    if backend is not None:
        return backend
    with _lock:
        if alias not in _backends:
            config = settings.SEARCH_BACKENDS.get(alias)
            if config is None:
                raise ImproperlyConfigured(
                    f"SEARCH_BACKEND={alias!r} is not one of SEARCH_BACKENDS: {', '.join(settings.SEARCH_BACKENDS)}."
                )
            if "BACKEND" not in config:
                raise ImproperlyConfigured(f"SEARCH_BACKENDS[{alias!r}] has no 'BACKEND' dotted path.")
            params = {k: v for k, v in config.items() if k != "BACKEND"}
            _backends[alias] = load_backend(config["BACKEND"], params)
        return _backends[alias]


def reset_backends() -> None:
    """Forget built backends (tests that change SEARCH_BACKENDS)."""
    with _lock:
        for backend in _backends.values():
            backend.close()
        _backends.clear()
