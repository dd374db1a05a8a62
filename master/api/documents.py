"""Serving a read-model document: its ETag and Cache-Control, and 304 for a client that has it."""

from flask import Response, request


def serve(document):
    response = Response(document.body, content_type=document.content_type)
    response.set_etag(document.etag)
    response.headers["Cache-Control"] = document.cache_control
    response.headers.update(document.headers)
    return response.make_conditional(request)
