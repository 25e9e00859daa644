"""Reads for the admin pages: a subject's current rate-limit usage, cache statistics, keys, model usage.

Synchronous (admin views and management commands); bounded: SCANs stop after a fixed
number of keys and memory is measured on a sample, so a large keyspace never stalls a page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chat.gateway import cache, limiter
from config.redis import glob_escape, key, sync_redis

SCAN_LIMIT = 20_000  # keys looked at by one keyspace summary
MEMORY_SAMPLES = 50  # keys per family measured with MEMORY USAGE


@dataclass(slots=True)
class Target:
    """A rate-limited subject the admin asked about, with the policy that applies to it."""

    scope: str
    subject: str
    policy: limiter.Policy | None
    label: str = ""


@dataclass(slots=True)
class Usage:
    target: Target
    requests: int = 0  # in the current sliding window
    tokens: int = 0  # charged in the last 60 s
    in_flight: int = 0
    reset_s: float = 0.0
    keys: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int | None:
        p = self.target.policy
        if p is None or not p.requests:
            return None
        return max(p.requests - self.requests, 0)


def targets_for(
    *,
    user_id: int | None = None,
    key_prefix: str = "",
    ip: str = "",
    session_key: str = "",
    include_global: bool = True,
) -> list[Target]:
    """The subjects matching the admin's query (unknown key prefix: none)."""
    from chat.gateway.models import APIKey

    table = limiter._load_policies_sync()
    out: list[Target] = []
    if include_global:
        out.append(Target("global", "global", table.defaults.get("global"), "all requests"))
    if user_id is not None:
        out.append(Target("user", f"user:{user_id}", table.defaults.get("user"), f"user #{user_id}"))
        for row in APIKey.objects.filter(user_id=user_id).order_by("prefix"):
            out.append(_key_target(row, table))
    if key_prefix:
        for row in APIKey.objects.filter(prefix__startswith=key_prefix.strip()).order_by("prefix")[:20]:
            if not any(t.subject == f"key:{row.pk}" for t in out):
                out.append(_key_target(row, table))
    if ip:
        out.append(Target("ip", f"ip:{ip.strip()}", table.defaults.get("ip"), f"IP {ip.strip()}"))
    if session_key:
        s = session_key.strip()
        out.append(Target("anonymous", f"anon:{s}", table.defaults.get("anonymous"), f"anonymous session {s[:8]}…"))
    return out


def _key_target(row: Any, table: limiter.PolicyTable) -> Target:
    policy = table.by_id.get(row.policy_id) if row.policy_id else None
    return Target(
        "api_key", f"key:{row.pk}", policy or table.defaults.get("api_key"), f"API key {row.prefix}… ({row.name})"
    )


def usage(targets: list[Target]) -> list[Usage]:
    """Current counts for each target, read in one pipeline (plus a TIME call)."""
    if not targets:
        return []
    with sync_redis() as r:
        secs, micros = r.time()
        now = int(secs) * 1000 + int(micros) // 1000
        pipe = r.pipeline(transaction=False)
        for t in targets:
            window_s = t.policy.window_s if t.policy else 60
            req, tok, conc, _ = limiter.subject_keys(t.subject, window_s)
            pipe.zcount(req, now - window_s * 1000 + 1, "+inf")
            pipe.zrange(req, 0, 0, withscores=True)
            pipe.zrangebyscore(tok, now - 60000 + 1, "+inf")
            pipe.zcount(conc, now + 1, "+inf")
        replies = pipe.execute()
    out = []
    for i, t in enumerate(targets):
        count, oldest, charges, in_flight = replies[i * 4 : i * 4 + 4]
        window_s = t.policy.window_s if t.policy else 60
        reset = (oldest[0][1] + window_s * 1000 - now) / 1000 if oldest else 0.0
        tokens = sum(int(c.rsplit(b":", 1)[1]) for c in charges if b":" in c)
        out.append(
            Usage(
                t,
                requests=int(count),
                tokens=tokens,
                in_flight=int(in_flight),
                reset_s=max(reset, 0.0),
                keys=list(limiter.subject_keys(t.subject, window_s)),
            )
        )
    return out


# --- response cache ------------------------------------------------------------------------


@dataclass(slots=True)
class CacheStats:
    lookups: int
    hits: int
    entries: int
    entries_exact: bool  # False when the SCAN stopped at SCAN_LIMIT
    ttl_override: int | None

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.lookups if self.lookups else None


def cache_stats() -> CacheStats:
    with sync_redis() as r:
        raw = r.hgetall(cache.stats_key())
        ttl = r.hget(cache.config_key(), "response_cache_ttl")
        entries, exact = _count(r, glob_escape(cache.prefix()) + "*")
    counts = {k.decode(): int(v) for k, v in raw.items()}
    return CacheStats(
        lookups=counts.get("lookups", 0),
        hits=counts.get("hits", 0),
        entries=entries,
        entries_exact=exact,
        ttl_override=int(ttl) if ttl else None,
    )


def _count(r: Any, pattern: str) -> tuple[int, bool]:
    n = 0
    for _ in r.scan_iter(match=pattern, count=1000):
        n += 1
        if n >= SCAN_LIMIT:
            return n, False
    return n, True


@dataclass(slots=True)
class Family:
    name: str
    keys: int
    sampled: int
    sampled_bytes: int

    @property
    def approx_bytes(self) -> int:
        return round(self.sampled_bytes / self.sampled * self.keys) if self.sampled else 0


def family_of(redis_key: str, platform_prefix: str) -> str:
    """Group a key: ``vh:chat:response:ab..`` -> ``chat:response``; ``vh:ratelimit:{user:1}:60`` -> ``ratelimit``."""
    rest = redis_key[len(platform_prefix) + 1 :] if redis_key.startswith(platform_prefix + ":") else redis_key
    parts = rest.split(":")
    if parts[0] in ("chat", "gateway", "apikey") and len(parts) > 1:
        return ":".join(parts[:2])
    if parts[0].isdigit():
        return "django-cache"  # django-redis writes <prefix>:<version>:<key>
    return parts[0].split("{")[0] or rest


def keyspace() -> tuple[list[Family], bool]:
    """Key counts and approximate memory by family under the platform prefix; (families, exact)."""
    platform = key()
    families: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    exact = True
    with sync_redis() as r:
        n = 0
        for raw in r.scan_iter(match=glob_escape(platform) + ":*", count=1000):
            k = raw.decode(errors="replace")
            fam = family_of(k, platform)
            counts[fam] = counts.get(fam, 0) + 1
            sample = families.setdefault(fam, [])
            if len(sample) < MEMORY_SAMPLES:
                sample.append(k)
            n += 1
            if n >= SCAN_LIMIT:
                exact = False
                break
        pipe = r.pipeline(transaction=False)
        order = [(fam, k) for fam, ks in families.items() for k in ks]
        for _, k in order:
            pipe.memory_usage(k)
        sizes = pipe.execute(raise_on_error=False) if order else []
    sampled: dict[str, list[int]] = {}
    for (fam, _), size in zip(order, sizes, strict=True):
        if isinstance(size, int):
            sampled.setdefault(fam, []).append(size)
    out = [Family(fam, counts[fam], len(sampled.get(fam, [])), sum(sampled.get(fam, []))) for fam in counts]
    return sorted(out, key=lambda f: -f.keys), exact


@dataclass(slots=True)
class Entry:
    key: str
    ttl_s: int
    data: dict[str, Any] | None
    raw_bytes: int


def cache_entry(entry_key: str) -> Entry | None:
    """One response-cache entry by full key (or by its sha256 digest)."""
    k = entry_key.strip()
    if k and not k.startswith(cache.prefix()):
        k = cache.entry_key(k)
    with sync_redis() as r:
        pipe = r.pipeline(transaction=False)
        pipe.get(k)
        pipe.ttl(k)
        raw, ttl = pipe.execute()
    if raw is None:
        return None
    return Entry(key=k, ttl_s=int(ttl), data=cache.decode(raw), raw_bytes=len(raw))


# --- model usage (PostgreSQL aggregates) -------------------------------------------------------


@dataclass(slots=True)
class UsageFilter:
    start: Any  # date
    end: Any  # date, inclusive
    model: str = ""
    key_prefix: str = ""
    user_id: int | None = None


def usage_rows(f: UsageFilter) -> Any:
    """``ModelUsage`` rows matching the filter, oldest day first."""
    from chat.gateway.models import ModelUsage

    qs = ModelUsage.objects.filter(day__gte=f.start, day__lte=f.end)
    if f.model:
        qs = qs.filter(model=f.model)
    if f.key_prefix:
        qs = qs.filter(api_key_prefix__startswith=f.key_prefix.strip())
    if f.user_id is not None:
        qs = qs.filter(user_id=f.user_id)
    return qs.order_by("day", "model", "api_key_id", "user_id")


_SUMS = ("requests", "cached", "errors", "prompt_tokens", "completion_tokens", "latency_ms")


def usage_totals(f: UsageFilter, *by: str) -> list[dict[str, Any]]:
    """Sums grouped by ``by`` (e.g. "day", "model"; "api_key_prefix", "user_id"), largest token use first."""
    from django.db.models import Sum

    rows = usage_rows(f).order_by().values(*by).annotate(**{name: Sum(name) for name in _SUMS})
    out = [dict(r) for r in rows]
    for r in out:
        r["tokens"] = (r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0)
        r["avg_latency_ms"] = round(r["latency_ms"] / r["requests"]) if r["requests"] else None
    return sorted(out, key=lambda r: tuple(r[b] for b in by) if "day" in by else (-r["tokens"],))


def usage_models(f: UsageFilter) -> list[str]:
    """The model names with usage in the period (the filter's choices)."""
    from chat.gateway.models import ModelUsage

    qs = ModelUsage.objects.filter(day__gte=f.start, day__lte=f.end)
    return sorted(set(qs.values_list("model", flat=True)))
