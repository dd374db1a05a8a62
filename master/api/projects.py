"""/api/v1/projects: mirrored projects and their sync trigger."""

from flask import Response, url_for
from flask.views import MethodView

from common.states import Trigger
from master.api import ApiBlueprint
from master.auth import authorize_request
from master.schemas import (DeleteProjectArgs, ProjectListArgs, ProjectPatchSchema, ProjectSchema, RunListArgs,
                            RunSchema, SyncArgs)
from master.services import projects, runs

blp = ApiBlueprint("projects", __name__, description="Mirrored projects")
blp.before_request(authorize_request)


@blp.route("/projects")
class Projects(MethodView):
    @blp.arguments(ProjectListArgs, location="query")
    @blp.response(200, ProjectSchema(many=True), headers={
        "X-Next-Cursor": {"description": "cursor of the next page; absent on the last page",
                          "schema": {"type": "string"}},
        "Link": {"description": 'the next page as <url>; rel="next"', "schema": {"type": "string"}}})
    def get(self, args):
        """Projects by name, a page at a time: follow X-Next-Cursor (or the Link header) for more."""
        page, after = projects.list_projects_page(args["limit"], args["cursor"])
        return Response(page, mimetype="application/json", headers=_next_page_headers(after, args["limit"]))

    @blp.arguments(ProjectSchema)
    @blp.response(201, ProjectSchema)
    def post(self, data):
        project = projects.create_project(data)
        return project, {"Location": url_for("projects.Project", name=project.name)}


def _next_page_headers(after, limit):
    if after is None:
        return {}
    url = url_for("projects.Projects", limit=limit, cursor=after)
    return {"X-Next-Cursor": after, "Link": f'<{url}>; rel="next"'}


@blp.route("/projects/<name>")
class Project(MethodView):
    @blp.response(200, ProjectSchema)
    def get(self, name):
        return projects.get_project(name)

    @blp.arguments(ProjectPatchSchema(partial=True))
    @blp.response(200, ProjectSchema)
    def patch(self, changes, name):
        return projects.update_project(name, changes)

    @blp.arguments(DeleteProjectArgs, location="query")
    @blp.response(204)
    def delete(self, args, name):
        """Remove the project; ``?force=true`` cancels a run in progress first (else 409)."""
        projects.delete_project(name, force=args["force"])


@blp.route("/projects/<name>/syncs")
class ProjectSyncs(MethodView):
    @blp.arguments(SyncArgs, location="query")
    @blp.response(202, RunSchema)
    def post(self, args, name):
        run, _ = runs.request_sync(projects.get_project(name), Trigger.MANUAL, force=args["force"])
        return run, {"Location": url_for("runs.Run", run_id=run.id)}


@blp.route("/projects/<name>/runs")
class ProjectRuns(MethodView):
    @blp.arguments(RunListArgs, location="query")
    @blp.response(200, RunSchema(many=True))
    def get(self, args, name):
        return runs.list_runs(projects.get_project(name), limit=args["limit"], before=args["before"])
