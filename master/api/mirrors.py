"""/mirrors: the page for the mirror's visitors, public whatever STATUS_PUBLIC says (like /jobs).

The search box filters on the server (``?q=``), so it works with JavaScript
off; master/static/mirrors.js filters as one types. Only files from this
origin run (Content-Security-Policy).
"""

from flask import Blueprint, current_app, render_template, request
from marshmallow import ValidationError

from common.errors import MirrorSyncError, ValidationFailed
from master.api.pages import error_page
from master.schemas import MirrorListArgs
from master.services import mirrors

blp = Blueprint("mirrors", __name__)
blp.register_error_handler(MirrorSyncError, error_page)
REFRESH_SECONDS = 300
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
          "base-uri 'none'; frame-ancestors 'none'")


@blp.get("/mirrors")
def mirror_list():
    try:
        args = MirrorListArgs().load(request.args)
    except ValidationError as error:
        raise ValidationFailed("The search is not valid: " + " ".join(
            str(message) for messages in error.messages.values() for message in messages), error.messages)
    entries = mirrors.mirror_entries(current_app.config["SITE_URL"])
    shown = {entry.name for entry in entries if mirrors.matches(entry, args["q"])}
    return render_template("mirrors.html", entries=entries, shown=shown, query=args["q"],
                           site_name=current_app.config["SITE_NAME"], refresh=REFRESH_SECONDS)


@blp.after_request
def content_policy(response):
    response.headers.setdefault("Content-Security-Policy", POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
