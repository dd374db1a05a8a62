"""Serving a read-model document: its ETag and Cache-Control, and 304 for a client that has it."""

from flask import Response, request


def serve(document):
    zipped = document.gzipped is not None and request.accept_encodings["gzip"] > 0
    response = Response(document.gzipped if zipped else document.body, content_type=document.content_type)
    # Each encoding is its own representation, with its own ETag.
    response.set_etag(f"{document.etag}-gzip" if zipped else document.etag)
    if zipped:
        response.headers["Content-Encoding"] = "gzip"
    if document.gzipped is not None:
        response.vary.add("Accept-Encoding")
    response.headers["Cache-Control"] = document.cache_control
    response.headers.update(document.headers)
    return response.make_conditional(request)
