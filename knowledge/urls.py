"""REST routes (mounted at /api/knowledge/)."""

from django.urls import path

from knowledge import api

app_name = "knowledge"
urlpatterns = [
    path("collections/", api.CollectionListView.as_view(), name="collection-list"),
    path("collections/<str:collection>/", api.CollectionDetailView.as_view(), name="collection-detail"),
    path(
        "collections/<str:collection>/documents/by-external-id/<str:external_id>/",
        api.DocumentSyncView.as_view(),
        name="document-sync",
    ),
    path("documents/", api.DocumentListView.as_view(), name="document-list"),
    path("documents/<int:pk>/", api.DocumentDetailView.as_view(), name="document-detail"),
    path("documents/<int:pk>/reindex/", api.DocumentReindexView.as_view(), name="document-reindex"),
    path("jobs/<int:pk>/", api.JobDetailView.as_view(), name="job-detail"),
    path("search/", api.SearchView.as_view(), name="search"),
]
