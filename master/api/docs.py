"""The interactive API docs' assets, served by the master itself from the pinned swagger-ui-bundle.

The docs page works without internet and loads nothing from another host:
Swagger UI's scripts and styles come from ``/api/v1/docs/assets/`` and its
online validator badge (an image from a third-party host) is turned off.
"""

from flask import Blueprint, request
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/api/v1/docs/assets/"
SWAGGER_UI_CONFIG = {"validatorUrl": None}
# flask-smorest's page starts Swagger UI with an inline script; everything else is same-origin.
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; frame-ancestors 'none'")
DOCS_ENDPOINT = "api-docs.openapi_swagger_ui"

blp = Blueprint("docs_assets", __name__, static_folder=str(swagger_ui_path),
                static_url_path=ASSETS_URL.rstrip("/"))


@blp.after_app_request
def same_origin_only(response):
    if request.endpoint == DOCS_ENDPOINT:
        response.headers.setdefault("Content-Security-Policy", DOCS_POLICY)
    return response
