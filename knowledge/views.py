"""The document page a citation links to (readable by whoever may read its collection)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from knowledge.selectors import document_chunks, document_get


def document_page(request: HttpRequest, pk: int) -> HttpResponse:
    document = document_get(principal=request.user, document_id=pk)
    if document is None:
        # Same answer for "missing" and "not yours": no probing of private collections.
        raise Http404("No such document.")
    return render(
        request,
        "knowledge/document_detail.html",
        {"document": document, "chunks": document_chunks(document=document)},
    )
