"""Public feeds at the root: /jobs (tunasync mirror-web shape), /mirrorz.json and /metrics (Prometheus)."""

from flask import Blueprint

from master.api.documents import serve
from master.services import feeds

blp = Blueprint("feeds", __name__)


@blp.get("/jobs")
def jobs():
    return serve(feeds.jobs_document())


@blp.get("/mirrorz.json")
def mirrorz():
    return serve(feeds.mirrorz_document())


@blp.get("/metrics")
def metrics():
    return serve(feeds.metrics_document())
