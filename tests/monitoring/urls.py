"""The real URLconf plus one view that answers 500, to see a 5xx in the live figures."""

from django.http import HttpRequest, HttpResponse, HttpResponseServerError
from django.urls import path

from config.urls import urlpatterns as real_urlpatterns


def boom(request: HttpRequest) -> HttpResponse:
    return HttpResponseServerError("boom")


urlpatterns = [path("test-boom", boom, name="test-boom"), *real_urlpatterns]
