"""The model groups of one registry snapshot: name and alias lookup, fallback chains.

Built once per registry load (every INFERENCE_REGISTRY_REFRESH_S, or after an admin save),
so resolving the ``model`` of a request is one dict lookup, and a group's fallback chain
is a precomputed tuple. No database, no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from inference.config import EMBEDDING, GENERATION, GroupConfig

log = logging.getLogger(__name__)


class ModelCatalog:
    """Enabled model groups by name and alias."""

    __slots__ = ("_by_name", "_chains", "_lookup")

    def __init__(self, groups: Iterable[GroupConfig] = ()) -> None:
        self._by_name: dict[str, GroupConfig] = {}
        self._lookup: dict[str, GroupConfig] = {}
        for group in groups:
            self._by_name[group.name] = group
            self._lookup[group.name] = group
        for group in self._by_name.values():
            for alias in group.aliases:
                # A name wins over another group's alias (the admin refuses such rows; an env
                # group renamed onto an alias must not make a group unreachable by its name).
                if alias in self._lookup and self._lookup[alias].name == alias:
                    log.warning("model alias %r of group %r is another group's name: ignored", alias, group.name)
                    continue
                self._lookup.setdefault(alias, group)
        self._chains: dict[str, tuple[GroupConfig, ...]] = {name: self._chain(g) for name, g in self._by_name.items()}

    def _chain(self, group: GroupConfig) -> tuple[GroupConfig, ...]:
        chain = [group]
        for name in group.fallbacks:
            fallback = self._by_name.get(name)
            # Disabled or deleted fallbacks are skipped; a fallback's own fallbacks are not
            # followed (the operator lists the whole order on each group: no surprises, no loops).
            if fallback is not None and fallback.kind == GENERATION and fallback not in chain:
                chain.append(fallback)
        return tuple(chain)

    def __len__(self) -> int:
        return len(self._by_name)

    def __bool__(self) -> bool:
        return bool(self._by_name)

    def resolve(self, name: str) -> GroupConfig | None:
        """The group a client's ``model`` names (its name or an alias), or None."""
        return self._lookup.get(name)

    def get(self, name: str) -> GroupConfig | None:
        """The group of that exact name (no aliases)."""
        return self._by_name.get(name)

    def chain(self, group: GroupConfig) -> tuple[GroupConfig, ...]:
        """The group, then its enabled fallbacks in order."""
        return self._chains.get(group.name, (group,))

    def groups(self, kind: str | None = None) -> list[GroupConfig]:
        """Enabled groups (of ``kind``), by name."""
        return sorted((g for g in self._by_name.values() if kind is None or g.kind == kind), key=lambda g: g.name)

    def embedding_group(self) -> GroupConfig | None:
        return next((g for g in self._by_name.values() if g.kind == EMBEDDING), None)
