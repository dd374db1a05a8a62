"""/api/v1/status: the public feed of every project's state."""

from flask.views import MethodView

from master.api import ApiBlueprint, reads_its_own_input
from master.api.documents import serve
from master.schemas import StatusSchema
from master.services import status

blp = ApiBlueprint("status", __name__, description="Public status feed")


@blp.route("/status")
class Status(MethodView):
    @blp.response(200, StatusSchema(many=True), headers={
        "ETag": {"description": "send it back in If-None-Match to get 304 while nothing changed",
                 "schema": {"type": "string"}}})
    @blp.alt_response(304, description="Not Modified: the If-None-Match ETag is current")
    @reads_its_own_input   # monitoring and front-ends add cache-busting parameters
    def get(self):
        return serve(status.status_document())
