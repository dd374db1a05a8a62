"""/api/v1/status: the public feed of every project's state."""

from flask.views import MethodView

from master.api import ApiBlueprint
from master.schemas import StatusSchema
from master.services import status

blp = ApiBlueprint("status", __name__, description="Public status feed")


@blp.route("/status")
class Status(MethodView):
    @blp.response(200, StatusSchema(many=True))
    def get(self):
        return status.status_feed()
