"""Endpoints from the environment: VLLM_URL / LOCAL_LLM_URL / TRITON_URL become ``ModelEndpoint`` rows.

Their model groups too: the generation endpoint serves the group named after VLLM_MODEL
(or LOCAL_LLM_MODEL), and the embedding model (INFERENCE_EMBEDDING_MODEL_NAME) gets a group
so clients can name it in /v1/embeddings.

Called by the registry on every reload (``INFERENCE_SYNC_ENDPOINTS``) and by
``manage.py sync_endpoints``. A leaf of the inference layer: it writes rows and
returns what it did; the caller decides whether its registry must reload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction

from inference.config import EnvEndpointSpec, GroupConfig, env_endpoint_specs, env_group_specs
from inference.models import ModelEndpoint, ModelGroup

logger = logging.getLogger(__name__)


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # model groups created or renamed


_ENV_FIELDS = ("kind", "protocol", "base_url", "model_name", "api_key", "group_id")


def sync_from_env() -> SyncReport:
    """Create or update the endpoints implied by VLLM_URL / LOCAL_LLM_URL / TRITON_URL.

    Env-managed endpoints (``source=env``) follow the environment: their address,
    model and key are rewritten, endpoints whose variable is gone are deleted. What
    operators tune in the admin (weight, timeouts, limits, enabled ...) is kept. An
    admin-made endpoint with the same name is never touched. Idempotent; safe to run
    from several processes at once.
    """
    report = SyncReport()
    groups: dict[str, int] = {}
    for group_spec in env_group_specs():
        for _attempt in range(2):
            try:
                groups[group_spec.name] = _sync_group(group_spec, report)
                break
            except IntegrityError:  # another process created it first: read it instead
                continue
    specs = env_endpoint_specs()
    for spec in specs:
        for _attempt in range(2):
            try:
                _sync_one(spec, report, groups.get(spec.group))
                break
            except IntegrityError:  # another process created it first: update it instead
                continue
    stale = ModelEndpoint.objects.filter(source=ModelEndpoint.Source.ENV).exclude(name__in=[s.name for s in specs])
    for row in stale:
        report.removed.append(row.name)
        row.delete()
    return report


def _sync_group(spec: GroupConfig, report: SyncReport) -> int:
    """The id of the group named ``spec.name`` (created, or the env group of that kind renamed).

    A group of that name made in the admin is used as it is (the env endpoint joins it).
    Renaming, rather than replacing, keeps what operators attached to the env group
    (aliases, fallbacks, limits, budgets, allowed-model lists) when VLLM_MODEL changes.
    Only the name and kind are the environment's; everything else is the admin's.
    """
    row = ModelGroup.objects.filter(name=spec.name).first()
    if row is None and spec.kind == ModelGroup.Kind.EMBEDDING:
        # One embedding group at most: an operator's, under the public name they chose, wins.
        row = ModelGroup.objects.filter(kind=spec.kind, source=ModelGroup.Source.ADMIN).first()
    if row is not None:
        return row.pk
    with transaction.atomic():
        env_row = ModelGroup.objects.select_for_update().filter(source=ModelGroup.Source.ENV, kind=spec.kind).first()
        if env_row is not None:
            logger.info("model group %s renamed to %s (the environment's model changed)", env_row.name, spec.name)
            env_row.name = spec.name
            env_row.save(update_fields=["name", "updated_at"])
            report.groups.append(spec.name)
            return env_row.pk
        row = ModelGroup.objects.create(name=spec.name, kind=spec.kind, source=ModelGroup.Source.ENV)
        report.groups.append(spec.name)
        return row.pk


def _sync_one(spec: EnvEndpointSpec, report: SyncReport, group_id: int | None) -> None:
    values = {f: getattr(spec, f) for f in _ENV_FIELDS if f != "group_id"}
    values["group_id"] = group_id
    # A plain read first: the common case (nothing to do) takes no lock.
    row = ModelEndpoint.objects.filter(name=spec.name).first()
    if row is not None and (
        row.source != ModelEndpoint.Source.ENV or all(getattr(row, f) == v for f, v in values.items())
    ):
        if row.source != ModelEndpoint.Source.ENV:
            logger.debug("endpoint %s is managed in the admin: not synced from the environment", spec.name)
            report.skipped.append(spec.name)
        else:
            report.unchanged.append(spec.name)
        return
    with transaction.atomic():
        row = ModelEndpoint.objects.select_for_update().filter(name=spec.name).first()
        if row is None:
            ModelEndpoint.objects.create(name=spec.name, source=ModelEndpoint.Source.ENV, **values)
            report.created.append(spec.name)
            return
        changed = [f for f, v in values.items() if getattr(row, f) != v]
        for f in changed:
            setattr(row, f, values[f])
        row.save(update_fields=[*changed, "updated_at"])
        report.updated.append(spec.name)
