"""This host's own public page (/) and /jobs feed, when STATUS_PAGE is on: what the slave holds."""

from flask import Blueprint, current_app, jsonify, render_template

from common import humanize

blp = Blueprint("slave_pages", __name__, template_folder="templates", static_folder="static",
                static_url_path="/static/mirrorsync")
REFRESH_SECONDS = 60


def _board():
    return current_app.extensions["mirrorsync_slave"].status_board


def _now():
    return current_app.extensions["mirrorsync_slave"].worker.clock.now()


@blp.get("/")
def index():
    return render_template("slave_status.html", holdings=_board().holdings(),
                           host=current_app.config["PUBLIC_NAME"], refresh=REFRESH_SECONDS)


@blp.get("/jobs")
def jobs():
    return jsonify(_board().jobs())


@blp.app_template_filter("age")
def age(moment):
    return humanize.age(moment, _now())


blp.add_app_template_filter(humanize.iso, "iso")
blp.add_app_template_filter(humanize.absolute, "absolute")
blp.add_app_template_filter(humanize.binary_size, "human_size")


@blp.after_request
def public_headers(response):
    response.headers.setdefault("Content-Security-Policy", "default-src 'none'; style-src 'self'; "
                                "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "application/json":
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
    return response
