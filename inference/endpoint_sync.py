"""Endpoints from the environment: VLLM_URL / LOCAL_LLM_URL / TRITON_URL become ``ModelEndpoint`` rows.

Called by the registry on every reload (``INFERENCE_SYNC_ENDPOINTS``) and by
``manage.py sync_endpoints``. A leaf of the inference layer: it writes rows and
returns what it did; the caller decides whether its registry must reload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction

from inference.config import EnvEndpointSpec, env_endpoint_specs
from inference.models import ModelEndpoint

logger = logging.getLogger(__name__)


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


_ENV_FIELDS = ("kind", "protocol", "base_url", "model_name", "api_key")


def sync_from_env() -> SyncReport:
    """Create or update the endpoints implied by VLLM_URL / LOCAL_LLM_URL / TRITON_URL.

    Env-managed endpoints (``source=env``) follow the environment: their address,
    model and key are rewritten, endpoints whose variable is gone are deleted. What
    operators tune in the admin (weight, timeouts, limits, enabled ...) is kept. An
    admin-made endpoint with the same name is never touched. Idempotent; safe to run
    from several processes at once.
    """
    report = SyncReport()
    specs = env_endpoint_specs()
    for spec in specs:
        for _attempt in range(2):
            try:
                _sync_one(spec, report)
                break
            except IntegrityError:  # another process created it first: update it instead
                continue
    stale = ModelEndpoint.objects.filter(source=ModelEndpoint.Source.ENV).exclude(name__in=[s.name for s in specs])
    for row in stale:
        report.removed.append(row.name)
        row.delete()
    return report


def _sync_one(spec: EnvEndpointSpec, report: SyncReport) -> None:
    values = {f: getattr(spec, f) for f in _ENV_FIELDS}
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
