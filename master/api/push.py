"""/api/v1/projects/<name>/push: upstream's call, authenticated by the project's own push token."""

from flask.views import MethodView

from common.errors import Unauthorized
from master.api import ApiBlueprint, reads_its_own_input
from master.auth import bearer_token, counted_failures
from master.schemas import PushSchema
from master.services import pushes

blp = ApiBlueprint("push", __name__, description="Upstream push")


@blp.route("/projects/<name>/push")
class ProjectPush(MethodView):
    @blp.doc(security=[{"bearer": []}], description="Authorization: Bearer <the project's push_token>")
    @blp.response(202, PushSchema)
    @reads_its_own_input   # a webhook sends its own body, which says nothing to us
    def post(self, name):
        with counted_failures(Unauthorized):
            return pushes.accept_push(name, bearer_token())
