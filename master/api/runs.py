"""/api/v1/runs: one run, its log, and cancelling it."""

from flask import Response
from flask.views import MethodView

from master.api import ApiBlueprint
from master.auth import authorize_request
from master.schemas import LogArgs, RunSchema
from master.services import cancels, runs

blp = ApiBlueprint("runs", __name__, description="Sync runs")
blp.before_request(authorize_request)


@blp.route("/runs/<id:run_id>")
class Run(MethodView):
    @blp.response(200, RunSchema)
    def get(self, run_id):
        return runs.get_run(run_id)


@blp.route("/runs/<id:run_id>/cancel")
class RunCancel(MethodView):
    @blp.response(200, RunSchema)
    def post(self, run_id):
        """End a queued, syncing or distributing run as cancelled (409 once it ended)."""
        return cancels.cancel_run(run_id)


@blp.route("/runs/<id:run_id>/log")
class RunLog(MethodView):
    @blp.arguments(LogArgs, location="query")
    @blp.response(200, content_type="text/plain")
    def get(self, args, run_id):
        """The run's rsync output from byte ``offset``; ``X-Next-Offset`` says where to go on."""
        data, next_offset = runs.read_run_log(run_id, args["offset"])
        return Response(data, mimetype="text/plain", headers={"X-Next-Offset": str(next_offset)})
