"""Monthly token budgets: which apply to a request, their Redis counters, and the headers.

A budget is checked in ``admit``'s round trip (one ``MGET`` of the month's counters, in the
same pipeline as the rate-limit scripts) and charged in ``settle``'s (``INCRBY`` the tokens
the answer used, inside the usage counters' script call). Counters are per subject and
calendar month in TIME_ZONE: ``vh:budget:{u3}:key:7:2026-12`` (all models) and
``...:2026-12:m3`` (model group 3). ``{u3}`` is the subject's usage shard
(``usage.shard_of``): its budget counters and its usage hash share one Redis Cluster slot,
so one script call charges both.

Like the per-minute token limit, a budget is checked before the answer and charged after
it: the answers in flight when it runs out may overshoot it, then every request is refused
until the month ends (429 ``budget_exceeded``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from chat.gateway.usage import BUDGET_COUNTER_TTL_S, shard_of
from config.local_cache import MISSING, LocalCache

# A month's counter outlives its month by a few weeks (the admin may still read it), then goes.
COUNTER_TTL_S = BUDGET_COUNTER_TTL_S


@dataclass(frozen=True, slots=True)
class Budget:
    id: int
    scope: str  # "api_key" | "user"
    tokens: int  # per month
    model_id: int | None = None


@dataclass(slots=True)
class BudgetTable:
    keys: dict[tuple[int, int | None], Budget] = field(default_factory=dict)  # (api key id, model id)
    users: dict[tuple[int, int | None], Budget] = field(default_factory=dict)  # (user id, model id)
    defaults: dict[tuple[str, int | None], Budget] = field(default_factory=dict)  # (scope, model id)

    def __bool__(self) -> bool:
        return bool(self.keys or self.users or self.defaults)


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """One budget that applies to a request: its counter and size."""

    budget: Budget
    key: str
    model: str = ""  # the model group's name for a per-model budget

    @property
    def scope(self) -> str:
        return self.budget.scope

    @property
    def limit(self) -> int:
        return self.budget.tokens


_tables: LocalCache[str, BudgetTable] = LocalCache(
    "token_budgets", ttl=lambda: settings.GATEWAY_POLICY_CACHE_S, maxsize=1
)
_KEY = "budgets"


def _load_sync() -> BudgetTable:
    from chat.gateway.models import TokenBudget

    table = BudgetTable()
    for row in TokenBudget.objects.filter(enabled=True):
        budget = Budget(row.pk, row.scope, int(row.tokens_per_month), row.model_group_id)
        if row.api_key_id is not None:
            table.keys[(row.api_key_id, row.model_group_id)] = budget
        elif row.user_id is not None:
            table.users[(row.user_id, row.model_group_id)] = budget
        else:
            table.defaults[(row.scope, row.model_group_id)] = budget
    return table


async def budget_table() -> BudgetTable:
    """The enabled budgets, cached per process like the policy table (GATEWAY_POLICY_CACHE_S).

    The database being down keeps the last table (none loaded yet: no budgets until it loads).
    """
    table = _tables.get(_KEY)
    if table is not MISSING:
        return table
    return await _tables.aget_or_load(
        _KEY, lambda: database_sync_to_async(_load_sync)(), fallback_on=(Exception,), default=BudgetTable()
    )


def invalidate_budgets() -> None:
    _tables.clear()


# --- the month -------------------------------------------------------------------------------

_month: tuple[str, float] = ("", 0.0)  # ("2026-12", epoch seconds when the next month starts)


def month_now() -> tuple[str, float]:
    """This month in TIME_ZONE and the epoch second it ends (computed once a month per process)."""
    global _month
    now = time.time()
    if now >= _month[1]:
        local = timezone.localtime()
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        start = datetime(year, month, 1, tzinfo=local.tzinfo)
        _month = (f"{local.year:04d}-{local.month:02d}", start.timestamp())
    return _month


def reset_month_cache() -> None:
    """Tests that change TIME_ZONE or the clock."""
    global _month
    _month = ("", 0.0)


def counter_key(tag: str, month: str, model_id: int | None) -> str:
    return _counter_key(settings.REDIS_KEY_PREFIX, tag, month, model_id)


@lru_cache(maxsize=16384)  # a few string operations per request otherwise
def _counter_key(prefix: str, tag: str, month: str, model_id: int | None) -> str:
    base = f"{prefix}:budget:{{u{shard_of(tag)}}}:{tag}:{month}"
    return f"{base}:m{model_id}" if model_id is not None else base


# --- which budgets apply ---------------------------------------------------------------------


def budget_checks(subject: Any, table: BudgetTable, model: Any = None) -> list[BudgetCheck]:
    """The budgets of ``subject`` (API key or signed-in user) for a request for ``model`` (a GroupConfig).

    The subject's own row wins over its scope's default, for all models and per model.
    """
    if not table:
        return []
    if subject.api_key_id is not None:
        own, scope, ident, tag = table.keys, "api_key", subject.api_key_id, f"key:{subject.api_key_id}"
    elif subject.user_id is not None and not subject.is_anonymous:
        own, scope, ident, tag = table.users, "user", subject.user_id, f"user:{subject.user_id}"
    else:
        return []
    month = month_now()[0]
    checks: list[BudgetCheck] = []
    budget = own.get((ident, None)) or table.defaults.get((scope, None))
    if budget is not None:
        checks.append(BudgetCheck(budget, counter_key(tag, month, None)))
    model_id = getattr(model, "id", None)
    if model_id is not None:
        budget = own.get((ident, model_id)) or table.defaults.get((scope, model_id))
        if budget is not None:
            checks.append(BudgetCheck(budget, counter_key(tag, month, model_id), model=model.name))
    return checks
