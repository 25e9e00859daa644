"""Admin for model groups and endpoints: configuration, health at a glance, "check now".

The API key is write-only: the form never renders it, nor any of its characters (only
whether one is set); typing a new one replaces it, "clear" removes it, leaving the field
blank keeps it. It is stored encrypted (inference/secrets.py).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from inference import services
from inference.models import ModelEndpoint, ModelGroup, mask_secret


class ModelEndpointForm(forms.ModelForm):
    new_api_key = forms.CharField(
        label=_("API key"),
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Write-only. Leave blank to keep the current key."),
    )
    clear_api_key = forms.BooleanField(label=_("Remove the API key"), required=False)

    class Meta:
        model = ModelEndpoint
        # Everything editable except api_key, which only the write-only fields below set.
        fields = [
            "name",
            "kind",
            "group",
            "protocol",
            "base_url",
            "model_name",
            "enabled",
            "priority",
            "weight",
            "max_concurrent",
            "max_queue",
            "connect_timeout_s",
            "read_timeout_s",
            "total_timeout_s",
            "default_params",
            "context_window",
        ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.api_key if self.instance and self.instance.pk else ""
        if current:
            self.fields["new_api_key"].help_text = _("Current key: %(hint)s. Leave blank to keep it.") % {
                "hint": mask_secret(current)
            }
        else:
            self.fields["new_api_key"].help_text = _("No key set. Write-only.")

    def _post_clean(self) -> None:
        # Apply the key before model validation runs on the instance.
        if self.cleaned_data.get("new_api_key"):
            self.instance.api_key = self.cleaned_data["new_api_key"]
        elif self.cleaned_data.get("clear_api_key"):
            self.instance.api_key = ""
        super()._post_clean()


@admin.register(ModelEndpoint)
class ModelEndpointAdmin(admin.ModelAdmin):
    form = ModelEndpointForm
    list_display = [
        "name",
        "kind",
        "group",
        "protocol",
        "base_url",
        "model_name",
        "enabled",
        "priority",
        "weight",
        "status",
        "last_latency_ms",
        "last_check_at",
        "short_error",
        "source",
    ]
    list_filter = ["kind", "group", "protocol", "enabled", "healthy", "source"]
    search_fields = ["name", "base_url", "model_name"]
    actions = ["check_now", "enable", "disable"]
    readonly_fields = [
        "api_key_hint",
        "source",
        "healthy",
        "last_check_at",
        "last_latency_ms",
        "last_error",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["name", "kind", "group", "protocol", "base_url", "model_name", "enabled", "source"]}),
        (_("Authentication"), {"fields": ["api_key_hint", "new_api_key", "clear_api_key"]}),
        (_("Routing"), {"fields": ["priority", "weight", "max_concurrent", "max_queue"]}),
        (_("Timeouts"), {"fields": ["connect_timeout_s", "read_timeout_s", "total_timeout_s"]}),
        (_("Generation"), {"fields": ["default_params", "context_window"]}),
        (_("Health"), {"fields": ["healthy", "last_check_at", "last_latency_ms", "last_error"]}),
        (_("History"), {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    @admin.display(description=_("API key"))
    def api_key_hint(self, obj: ModelEndpoint) -> str:
        return obj.api_key_hint or "—"

    @admin.display(description=_("status"), ordering="healthy")
    def status(self, obj: ModelEndpoint) -> str:
        if obj.healthy is None:
            return format_html('<span style="color:#888">{}</span>', _("unknown"))
        if obj.healthy:
            return format_html('<span style="color:#1a7f37">● {}</span>', _("up"))
        return format_html('<span style="color:#cf222e">● {}</span>', _("down"))

    @admin.display(description=_("last error"))
    def short_error(self, obj: ModelEndpoint) -> str:
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error

    def save_model(self, request: HttpRequest, obj: ModelEndpoint, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        services.endpoints_invalidate_cache()

    def delete_model(self, request: HttpRequest, obj: ModelEndpoint) -> None:
        super().delete_model(request, obj)
        services.endpoints_invalidate_cache()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]) -> None:
        super().delete_queryset(request, queryset)
        services.endpoints_invalidate_cache()

    @admin.action(description=_("Check now"))
    def check_now(self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]) -> None:
        for result in services.endpoints_check(queryset):
            if result.ok:
                self.message_user(
                    request, f"{result.name}: up ({result.latency_ms:.0f} ms) {result.detail}", messages.SUCCESS
                )
            else:
                self.message_user(request, f"{result.name}: down: {result.detail}", messages.ERROR)

    @admin.action(description=_("Enable"))
    def enable(self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]) -> None:
        services.endpoints_set_enabled(queryset, enabled=True)

    @admin.action(description=_("Disable"))
    def disable(self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]) -> None:
        services.endpoints_set_enabled(queryset, enabled=False)


class GroupEndpointInline(admin.TabularInline):
    """The group's endpoints at a glance (edited on their own page: keys and timeouts live there)."""

    model = ModelEndpoint
    fields = ["name", "base_url", "model_name", "weight", "priority", "enabled", "healthy"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = _("endpoints serving this model")

    def has_add_permission(self, request: HttpRequest, obj: ModelGroup | None = None) -> bool:
        return False


@admin.register(ModelGroup)
class ModelGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "aliases", "fallbacks", "endpoint_count", "context_window", "enabled", "source"]
    list_filter = ["kind", "enabled", "source"]
    search_fields = ["name", "aliases"]
    readonly_fields = ["source", "created_at", "updated_at"]
    fields = ["name", "kind", "aliases", "fallbacks", "context_window", "enabled", "source", "created_at", "updated_at"]
    inlines = [GroupEndpointInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelGroup]:
        return super().get_queryset(request).annotate(n_endpoints=Count("endpoints"))

    @admin.display(description=_("endpoints"), ordering="n_endpoints")
    def endpoint_count(self, obj: ModelGroup) -> int:
        return obj.n_endpoints

    def save_model(self, request: HttpRequest, obj: ModelGroup, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        services.endpoints_invalidate_cache()

    def delete_model(self, request: HttpRequest, obj: ModelGroup) -> None:
        super().delete_model(request, obj)
        services.endpoints_invalidate_cache()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelGroup]) -> None:
        super().delete_queryset(request, queryset)
        services.endpoints_invalidate_cache()
