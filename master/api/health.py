"""Liveness, public."""

from flask import Blueprint, jsonify

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz():
    return jsonify(status="ok")
