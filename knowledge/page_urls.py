"""HTML pages (mounted at /knowledge/): the document page that citations link to."""

from django.urls import path

from knowledge import views

app_name = "knowledge-pages"
urlpatterns = [path("documents/<int:pk>/", views.document_page, name="document")]
