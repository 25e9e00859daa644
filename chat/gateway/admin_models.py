"""Admin for model access, token budgets and the model usage page (charts, CSV export).

Imported by ``chat/gateway/admin.py`` (the registrations happen at import). Saving a row
makes this process apply it at once; other processes within GATEWAY_POLICY_CACHE_S
(budgets) or GATEWAY_KEY_CACHE_S (access).
"""

from __future__ import annotations

import csv
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from chat.gateway import budgets, selectors
from chat.gateway.access import forget_access
from chat.gateway.auth import forget_cached_keys
from chat.gateway.models import ModelAccess, ModelUsage, TokenBudget
from chat.gateway.usage import usage_flush
from inference.models import ModelGroup


def model_choices() -> list[tuple[int, str]]:
    return [(g.pk, f"{g.name} ({g.get_kind_display()})") for g in ModelGroup.objects.order_by("kind", "name")]


class AllowedModelsField(forms.TypedMultipleChoiceField):
    """The allowed-models list (model-group ids) as checkboxes; none ticked: no restriction."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.CheckboxSelectMultiple)
        kwargs.setdefault("label", _("Allowed models"))
        super().__init__(coerce=int, choices=model_choices, **kwargs)


class ModelAccessForm(forms.ModelForm):
    allowed_models = AllowedModelsField(help_text=_("None ticked: this row states no restriction."))

    class Meta:
        model = ModelAccess
        fields = ("user", "group", "allowed_models")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if bool(data.get("user")) == bool(data.get("group")):
            raise forms.ValidationError(_("Choose a user or a group (one of them)."))
        return data


@admin.register(ModelAccess)
class ModelAccessAdmin(admin.ModelAdmin):
    form = ModelAccessForm
    list_display = ("__str__", "models", "updated_at")
    autocomplete_fields = ("user",)
    search_fields = ("user__username", "group__name")

    @admin.display(description=_("allowed models"))
    def models(self, obj: ModelAccess) -> str:
        names = dict(ModelGroup.objects.filter(pk__in=obj.allowed_models or []).values_list("pk", "name"))
        return ", ".join(names.get(int(i), f"#{i} (deleted)") for i in obj.allowed_models or []) or "—"

    def save_model(self, request: HttpRequest, obj: ModelAccess, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        forget_access()
        forget_cached_keys()  # key rows carry their owner's set

    def delete_model(self, request: HttpRequest, obj: ModelAccess) -> None:
        super().delete_model(request, obj)
        forget_access()
        forget_cached_keys()


@admin.register(TokenBudget)
class TokenBudgetAdmin(admin.ModelAdmin):
    list_display = ("__str__", "scope", "api_key", "user", "model_group", "tokens_per_month", "enabled")
    list_filter = ("scope", "enabled", "model_group")
    list_editable = ("tokens_per_month", "enabled")
    autocomplete_fields = ("user", "api_key")
    search_fields = ("api_key__prefix", "api_key__name", "user__username")

    def save_model(self, request: HttpRequest, obj: TokenBudget, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        budgets.invalidate_budgets()

    def delete_model(self, request: HttpRequest, obj: TokenBudget) -> None:
        super().delete_model(request, obj)
        budgets.invalidate_budgets()


# --- the usage page --------------------------------------------------------------------------


class UsageFilterForm(forms.Form):
    start = forms.DateField(required=False, label=_("From"), widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label=_("To"), widget=forms.DateInput(attrs={"type": "date"}))
    model = forms.CharField(required=False, max_length=100, label=_("Model"))
    key_prefix = forms.CharField(required=False, max_length=16, label=_("API key prefix"))
    user_id = forms.IntegerField(required=False, min_value=0, label=_("User id (0: anonymous)"))

    def usage_filter(self) -> selectors.UsageFilter:
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        today = timezone.localdate()
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=29)
        return selectors.UsageFilter(
            start=start,
            end=end,
            model=data.get("model") or "",
            key_prefix=data.get("key_prefix") or "",
            user_id=data.get("user_id"),
        )


PALETTE = ("#2f6fb0", "#d9822b", "#3c9a5f", "#b04a6f", "#7a5cb0", "#8a8a2b", "#2ba3a3", "#a05a2c")


def bar_chart(days: list[Any], series: dict[str, dict[Any, int]], *, height: int = 160) -> dict[str, Any]:
    """Stacked daily bars (one colour per model) as SVG geometry for the template."""
    width = max(len(days), 1) * 22
    totals = [sum(s.get(d, 0) for s in series.values()) for d in days]
    top = max(totals, default=0) or 1
    bars = []
    for i, day in enumerate(days):
        y = height
        for n, (model, values) in enumerate(sorted(series.items())):
            value = values.get(day, 0)
            if not value:
                continue
            h = max(1.0, value / top * (height - 10))
            y -= h
            bars.append(
                {
                    "x": i * 22 + 2,
                    "y": round(y, 1),
                    "h": round(h, 1),
                    "color": PALETTE[n % len(PALETTE)],
                    "title": f"{day} {model}: {value}",
                }
            )
    legend = [{"model": m, "color": PALETTE[n % len(PALETTE)]} for n, m in enumerate(sorted(series))]
    return {"width": width, "height": height, "bars": bars, "max": top, "legend": legend}


@admin.register(ModelUsage)
class ModelUsageAdmin(admin.ModelAdmin):
    """Not a list: a page of charts and totals over the aggregated rows, and their CSV export."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST" and request.POST.get("action") == "flush":
            report = usage_flush()
            messages.success(request, f"Flushed {report.requests} request(s) into {report.rows} row(s).")
            return HttpResponseRedirect(f"{request.path}?{request.GET.urlencode()}")
        form = UsageFilterForm(request.GET or None)
        f = form.usage_filter()
        if request.GET.get("format") == "csv":
            return self._csv(f)
        by_day = selectors.usage_totals(f, "day", "model")
        days = [f.start + timedelta(days=i) for i in range((f.end - f.start).days + 1)]
        tokens: dict[str, dict[Any, int]] = {}
        requests: dict[str, dict[Any, int]] = {}
        for r in by_day:
            tokens.setdefault(r["model"], {})[r["day"]] = r["tokens"]
            requests.setdefault(r["model"], {})[r["day"]] = r["requests"] or 0
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Model usage"),
            "form": form,
            "filter": f,
            "models": selectors.usage_models(f),
            "token_chart": bar_chart(days, tokens),
            "request_chart": bar_chart(days, requests),
            "per_model": selectors.usage_totals(f, "model"),
            "per_key": selectors.usage_totals(f, "api_key_prefix", "api_key_id")[:50],
            "per_user": self._with_usernames(selectors.usage_totals(f, "user_id")[:50]),
            "csv_query": _with_csv(request),
        }
        return TemplateResponse(request, "admin/gateway/model_usage.html", context)

    @staticmethod
    def _with_usernames(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names = dict(get_user_model().objects.filter(pk__in=[r["user_id"] for r in rows]).values_list("pk", "username"))
        for r in rows:
            r["username"] = names.get(r["user_id"], "anonymous" if r["user_id"] == 0 else f"#{r['user_id']}")
        return rows

    def _csv(self, f: selectors.UsageFilter) -> HttpResponse:
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="model-usage-{f.start}-{f.end}.csv"'
        writer = csv.writer(response)
        writer.writerow(
            [
                "day",
                "model",
                "api_key_id",
                "api_key_prefix",
                "user_id",
                "requests",
                "cached",
                "errors",
                "prompt_tokens",
                "completion_tokens",
                "latency_ms_total",
            ]
        )
        for row in selectors.usage_rows(f).iterator():
            writer.writerow(
                [
                    row.day.isoformat(),
                    row.model,
                    row.api_key_id,
                    row.api_key_prefix,
                    row.user_id,
                    row.requests,
                    row.cached,
                    row.errors,
                    row.prompt_tokens,
                    row.completion_tokens,
                    row.latency_ms,
                ]
            )
        return response


def _with_csv(request: HttpRequest) -> str:
    query = request.GET.copy()
    query["format"] = "csv"
    return query.urlencode()
