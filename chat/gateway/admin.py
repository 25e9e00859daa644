"""Gateway controls in Django admin: policies, API keys, live usage and the response cache.

Model access, token budgets and the model usage page are in ``admin_models`` (imported below).

The usage and cache pages are thin: they parse a form, call one selector or service, and
render. Redis being down shows an error message on the page, never a 500.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from redis.exceptions import RedisClusterException, RedisError

from chat.gateway import admin_models, cache, limiter, selectors, services
from chat.gateway.auth import forget_cached_keys
from chat.gateway.models import API_KEY_SCOPES, APIKey, RateLimitPolicy, RateLimitUsage, ResponseCache
from config.redis import key as redis_key

REDIS_PROBLEMS = (RedisError, RedisClusterException, OSError, RuntimeError)


@admin.register(RateLimitPolicy)
class RateLimitPolicyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "scope",
        "is_default",
        "requests",
        "window_seconds",
        "tokens_per_minute",
        "concurrent_requests",
        "model_group",
        "enabled",
    )
    list_filter = ("scope", "enabled", "is_default", "model_group")
    list_editable = ("requests", "window_seconds", "tokens_per_minute", "concurrent_requests", "enabled")
    search_fields = ("name",)

    def save_model(self, request: HttpRequest, obj: RateLimitPolicy, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        limiter.invalidate_policies()

    def delete_model(self, request: HttpRequest, obj: RateLimitPolicy) -> None:
        super().delete_model(request, obj)
        limiter.invalidate_policies()


class APIKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in API_KEY_SCOPES], widget=forms.CheckboxSelectMultiple, initial=["chat"]
    )
    allowed_models = admin_models.AllowedModelsField(
        help_text=_("None ticked: every model the owner may use. Ticked: only those (within the owner's).")
    )

    # Set by APIKeyAdmin.get_form: who is creating the key.
    request_user: Any = None

    class Meta:
        model = APIKey
        fields = ("name", "user", "scopes", "allowed_models", "policy", "expires_at")

    def clean_user(self) -> Any:
        owner = self.cleaned_data.get("user")
        creator = self.request_user
        # A key acts as its owner: minting one for someone else is acting as them (a staff user
        # could otherwise become a superuser through a key). Only superusers may.
        if creator is not None and owner is not None and owner != creator and not creator.is_superuser:
            raise forms.ValidationError(_("Only a superuser may create a key for another user."))
        return owner


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    form = APIKeyForm
    list_display = ("name", "prefix", "user", "scope_list", "policy", "expires_at", "last_used_at", "status")
    list_filter = ("revoked_at", "expires_at")
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    autocomplete_fields = ("user",)
    actions = ("revoke",)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        form.request_user = request.user
        return form

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A key's owner never changes: re-pointing a key is minting one for someone else.
        return (*self.readonly_fields, "user") if obj is not None else self.readonly_fields

    @admin.display(description=_("scopes"))
    def scope_list(self, obj: APIKey) -> str:
        return ", ".join(obj.scopes or [])

    @admin.display(description=_("status"))
    def status(self, obj: APIKey) -> str:
        if obj.revoked_at:
            return "revoked"
        return "active" if obj.is_active else "expired"

    def save_model(self, request: HttpRequest, obj: APIKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            # This process applies the edit at once (allowed models, policy); others within GATEWAY_KEY_CACHE_S.
            forget_cached_keys()
            return
        created = services.apikey_create(
            created_by=request.user,
            name=obj.name,
            user=obj.user,
            scopes=list(form.cleaned_data["scopes"]),
            policy=obj.policy,
            expires_at=obj.expires_at,
            allowed_models=list(form.cleaned_data.get("allowed_models") or []),
        )
        obj.pk = created.api_key.pk
        obj.prefix = created.api_key.prefix
        # Shown once, here; only its sha256 is stored.
        messages.warning(
            request,
            f"API key created. Copy it now, it will not be shown again: {created.full_key}",
        )

    @admin.action(description=_("Revoke selected API keys (effective immediately)"))
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        for key in queryset:
            services.apikey_revoke(api_key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: APIKey) -> None:
        key_id = obj.pk
        super().delete_model(request, obj)
        services.apikey_publish_revocation(api_key_id=key_id)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        super().delete_queryset(request, queryset)
        for key_id in ids:
            services.apikey_publish_revocation(api_key_id=key_id)


# --- live usage ------------------------------------------------------------------------------


class UsageQueryForm(forms.Form):
    user_id = forms.IntegerField(required=False, min_value=1, label=_("User id"))
    key_prefix = forms.CharField(required=False, max_length=16, label=_("API key prefix"))
    ip = forms.GenericIPAddressField(required=False, label=_("IP address"))
    session_key = forms.CharField(required=False, max_length=64, label=_("Anonymous session key"))


class _PageAdmin(admin.ModelAdmin):
    """A model-less admin page: the changelist renders the page instead of a list."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "can_change": self.has_change_permission(request),
            **extra,
        }


@admin.register(RateLimitUsage)
class RateLimitUsageAdmin(_PageAdmin):
    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = UsageQueryForm(request.POST or request.GET or None)
        rows: list[selectors.Usage] = []
        if form.is_bound and form.is_valid():
            targets = selectors.targets_for(
                user_id=form.cleaned_data["user_id"],
                key_prefix=form.cleaned_data["key_prefix"],
                ip=form.cleaned_data["ip"] or "",
                session_key=form.cleaned_data["session_key"],
            )
            if request.method == "POST" and request.POST.get("action") == "reset":
                if not self.has_change_permission(request):
                    raise PermissionDenied
                chosen = set(request.POST.getlist("subject"))
                try:
                    n = services.ratelimit_reset(subjects=[t.subject for t in targets if t.subject in chosen])
                    messages.success(request, f"Reset {len(chosen)} subject(s) ({n} Redis key(s) removed).")
                except REDIS_PROBLEMS as exc:
                    messages.error(request, f"Redis is unavailable: {exc}")
                return HttpResponseRedirect(f"{request.path}?{request.POST.urlencode()}")
            try:
                rows = selectors.usage(targets)
            except REDIS_PROBLEMS as exc:
                messages.error(request, f"Redis is unavailable: {exc}")
        return TemplateResponse(
            request,
            "admin/gateway/usage.html",
            self._context(request, _("Rate-limit usage"), form=form, rows=rows),
        )


# --- response cache --------------------------------------------------------------------------


class LookupForm(forms.Form):
    key = forms.CharField(max_length=300, label=_("Key or sha256 digest"))


class PrefixForm(forms.Form):
    prefix = forms.CharField(max_length=200, label=_("Key prefix (after the platform prefix)"))


class TTLForm(forms.Form):
    seconds = forms.IntegerField(
        required=False,
        min_value=cache.TTL_MIN_S,
        max_value=cache.TTL_MAX_S,
        label=_("Entry TTL (seconds, 3600-86400; empty: RESPONSE_CACHE_TTL)"),
    )


@admin.register(ResponseCache)
class ResponseCacheAdmin(_PageAdmin):
    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            if not self.has_change_permission(request):
                raise PermissionDenied
            response = self._act(request)
            if response is not None:
                return response
            return HttpResponseRedirect(reverse("admin:gateway_responsecache_changelist"))

        ctx: dict[str, Any] = {
            "lookup_form": LookupForm(request.GET or None),
            "prefix_form": PrefixForm(initial={"prefix": "chat:response:"}),
            "ttl_form": TTLForm(),
            "namespace": cache.prefix(),
            "platform_prefix": cache.prefix().split(":", 1)[0] + ":",
            "env_ttl": settings.RESPONSE_CACHE_TTL,
        }
        try:
            ctx["stats"] = selectors.cache_stats()
            ctx["families"], ctx["families_exact"] = selectors.keyspace()
            ctx["ttl_form"] = TTLForm(initial={"seconds": ctx["stats"].ttl_override})
            if ctx["lookup_form"].is_valid():
                ctx["entry"] = selectors.cache_entry(ctx["lookup_form"].cleaned_data["key"])
                ctx["looked_up"] = True
        except REDIS_PROBLEMS as exc:
            messages.error(request, f"Redis is unavailable: {exc}")
        return TemplateResponse(request, "admin/gateway/cache.html", self._context(request, _("Response cache"), **ctx))

    def _act(self, request: HttpRequest) -> HttpResponse | None:
        action = request.POST.get("action", "")
        try:
            if action == "delete_key":
                deleted = services.cache_delete(entry_key=request.POST.get("key", ""))
                messages.success(request, "Entry deleted." if deleted else "No such entry.")
            elif action in ("purge_prefix", "flush"):
                prefix = "chat:response:" if action == "flush" else request.POST.get("prefix", "").strip()
                if not prefix:
                    messages.error(request, "Give a prefix.")
                elif request.POST.get("confirm") != "yes":
                    # Confirmation step: nothing is deleted until the operator confirms.
                    return TemplateResponse(
                        request,
                        "admin/gateway/cache_confirm.html",
                        self._context(
                            request,
                            _("Confirm deletion"),
                            action=action,
                            prefix=prefix,
                            full_prefix=redis_key(prefix),
                        ),
                    )
                else:
                    n = services.keys_purge_prefix(prefix=prefix)
                    messages.success(request, f"Deleted {n} key(s) under {redis_key(prefix)}.")
            elif action == "set_ttl":
                form = TTLForm(request.POST)
                if form.is_valid():
                    ttl = services.cache_ttl_set(seconds=form.cleaned_data["seconds"])
                    messages.success(request, f"New entries now live {ttl} s.")
                else:
                    messages.error(request, f"Invalid TTL: {form.errors.as_text()}")
            elif action == "reset_stats":
                services.cache_stats_reset()
                messages.success(request, "Hit-rate counters reset.")
            else:
                messages.error(request, f"Unknown action {action!r}.")
        except REDIS_PROBLEMS as exc:
            messages.error(request, f"Redis is unavailable: {exc}")
        except ValueError as exc:
            messages.error(request, str(exc))
        return None
