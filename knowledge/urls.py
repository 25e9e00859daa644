"""REST routes (mounted at /api/knowledge/)."""

from django.urls import path

from knowledge import api

app_name = "knowledge"
urlpatterns = [
    path("collections/", api.CollectionListView.as_view(), name="collection-list"),
    path("documents/", api.DocumentListView.as_view(), name="document-list"),
    path("documents/<int:pk>/", api.DocumentDetailView.as_view(), name="document-detail"),
    path("search/", api.SearchView.as_view(), name="search"),
]
