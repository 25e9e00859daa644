"""Helpers shared by the deploy tests: PromQL metric names, and what each source exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
ALERTS = REPO / "deploy" / "prometheus" / "alerts"

_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, keywords or labels.

    A light tokenizer, enough for the expressions this project writes: strings,
    Grafana variables, label matchers, ranges and by/on(...) lists are removed
    first; what remains is operators, numbers, functions and metric names.
    """
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VAR.sub("5m", text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group(1)
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):  # a function call (or an aggregation: sum(...))
            continue
        if name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def expand(name: str, kind: str) -> set[str]:
    """The series names a prometheus_client metric family exports, by type.

    ``name`` is the family name as prometheus_client keeps it (a counter's
    without its ``_total``).
    """
    if kind == "counter":
        base = name.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "info":
        return {f"{name}_info"}
    return {name}


def platform_metric_names() -> dict[str, set[str]]:
    """Exported names by source: monitoring/metrics.py, django-prometheus, default collectors."""
    import django_prometheus.cache.metrics
    import django_prometheus.db.metrics
    import django_prometheus.migrations
    import django_prometheus.models  # noqa: F401  (registers django_model_*)
    from django_prometheus.middleware import Metrics
    from prometheus_client import REGISTRY
    from prometheus_client.metrics import MetricWrapperBase

    from monitoring import metrics as platform

    declared: set[str] = set()
    for value in vars(platform).values():
        if isinstance(value, MetricWrapperBase):
            declared |= expand(value._name, value._type)
    Metrics.get_instance()  # the middleware's metrics register on first use

    django: set[str] = set()
    default: set[str] = set()
    for family in REGISTRY.collect():
        names = expand(family.name, family.type)
        if family.name.startswith("django_"):
            django |= names
        elif family.name.startswith(("process_", "python_")):
            default |= names
    return {"monitoring/metrics.py": declared, "django-prometheus": django, "default collectors": default}


def upstream_metric_names() -> set[str]:
    """Upstream names are listed as exported (other client libraries, other suffix rules)."""
    from tests.deploy.upstream_metric_names import UPSTREAM_METRICS

    names: set[str] = set()
    for name, (kind, _source) in UPSTREAM_METRICS.items():
        if kind in ("histogram", "summary"):
            names |= (
                {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
                if kind == "histogram"
                else {name, f"{name}_sum", f"{name}_count"}
            )
        else:
            names.add(name)
    return names


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    """(where, expr) for every query in every provisioned dashboard."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board.get("panels", []):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield f"{path.name}: {panel['title']}", target["expr"]
        for var in board.get("templating", {}).get("list", []):
            query = var.get("query")
            if isinstance(query, dict):
                query = query.get("query")
            if var.get("type") == "query" and query:
                yield f"{path.name}: variable {var['name']}", query


def alert_expressions() -> Iterator[tuple[str, str]]:
    for path in sorted(ALERTS.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                yield f"{path.name}: {name}", rule["expr"]
