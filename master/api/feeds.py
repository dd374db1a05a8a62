"""Public feeds at the root: /jobs (tunasync mirror-web shape) and /metrics (Prometheus)."""

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from master.services import feeds

blp = Blueprint("feeds", __name__)
registry = CollectorRegistry(auto_describe=False)
registry.register(feeds.MetricsCollector())


@blp.get("/jobs")
def jobs():
    return jsonify(feeds.jobs_feed())


@blp.get("/metrics")
def metrics():
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
