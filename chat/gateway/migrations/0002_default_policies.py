"""Default rate-limit policies (documented in docs/gateway.md, editable in admin).

The numbers are a snapshot for new installations; later edits happen in admin, not here.
"""

from django.db import migrations

DEFAULTS = [
    # name, scope, requests, window s, tokens/min, concurrent
    ("Global", "global", 1200, 60, 0, 0),
    ("Per user", "user", 30, 60, 20000, 3),
    ("Per API key", "api_key", 120, 60, 100000, 8),
    ("Per IP (anonymous)", "ip", 30, 60, 20000, 4),
    ("Per anonymous session", "anonymous", 10, 60, 5000, 1),
]


def create(apps, schema_editor):
    Policy = apps.get_model("gateway", "RateLimitPolicy")
    for name, scope, requests, window, tokens, concurrent in DEFAULTS:
        if Policy.objects.filter(scope=scope, is_default=True).exists():
            continue
        Policy.objects.get_or_create(
            name=name,
            defaults={
                "scope": scope,
                "is_default": True,
                "requests": requests,
                "window_seconds": window,
                "tokens_per_minute": tokens,
                "concurrent_requests": concurrent,
                "enabled": True,
            },
        )


def remove(apps, schema_editor):
    Policy = apps.get_model("gateway", "RateLimitPolicy")
    Policy.objects.filter(name__in=[d[0] for d in DEFAULTS]).delete()


class Migration(migrations.Migration):
    dependencies = [("gateway", "0001_initial")]
    operations = [migrations.RunPython(create, remove)]
