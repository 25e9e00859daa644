from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

urlpatterns = [
    path("", include("monitoring.urls")),
    path("admin/live/", include("monitoring.admin_urls")),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("api/knowledge/", include("knowledge.urls")),
    path("knowledge/", include("knowledge.page_urls")),
    path("api/gateway/", include("chat.gateway.urls")),
    path("api/", include("chat.api_urls")),
    path("v1/", include("chat.openai_urls")),
    path("", include("chat.urls")),
]
