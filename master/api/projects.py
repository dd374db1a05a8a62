"""/api/v1/projects: mirrored projects and their sync trigger."""

from flask import url_for
from flask.views import MethodView

from common.states import Trigger
from master.api import ApiBlueprint
from master.auth import authorize_request
from master.schemas import DeleteProjectArgs, ProjectPatchSchema, ProjectSchema, RunListArgs, RunSchema, SyncArgs
from master.services import projects, runs

blp = ApiBlueprint("projects", __name__, description="Mirrored projects")
blp.before_request(authorize_request)


@blp.route("/projects")
class Projects(MethodView):
    @blp.response(200, ProjectSchema(many=True))
    def get(self):
        return projects.list_projects()

    @blp.arguments(ProjectSchema)
    @blp.response(201, ProjectSchema)
    def post(self, data):
        project = projects.create_project(data)
        return project, {"Location": url_for("projects.Project", name=project.name)}


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
