"""/api/v1/slaves: admin views of slaves, and the signed channel slaves talk to the master on."""

from flask import g, request
from flask.views import MethodView

from common.errors import Forbidden
from common.wire import EXCHANGE_FIELDS, HeartbeatSchema, RegistrationSchema, ReportSchema
from master.api import ApiBlueprint
from master.auth import authorize_request, bearer_token, counted_failures, private_channel
from master.schemas import SlavePatchSchema, SlaveSchema
from master.services import distribution, slaves

blp = ApiBlueprint("slaves", __name__, description="Slaves (public hosts), for admins")
blp.before_request(authorize_request)

channel = ApiBlueprint("slave_channel", __name__, description="Enrollment, heartbeats and reports from slaves")


@channel.before_request
def verify_slave_signature():
    """Every call but enrollment is signed with the slave's own key; raises Unauthorized."""
    if request.endpoint == "slave_channel.Registration":
        return
    name = (request.view_args or {}).get("name", "")
    # Not counted as failed logins: a slave with a stale clock would lock out its whole network.
    # Keys are 256-bit random, so there is nothing to guess.
    g.slave = slaves.authenticate_slave(name, request.headers, request.method,
                                        request.script_root + request.full_path.rstrip("?"),
                                        request.get_data(cache=True))


class SlaveView:
    """Dump helper: a slave with its computed state."""

    def __init__(self, slave):
        self._slave = slave
        self.state = slaves.slave_state(slave)

    def __getattr__(self, name):
        return getattr(self._slave, name)


@blp.route("/slaves")
class Slaves(MethodView):
    @blp.response(200, SlaveSchema(many=True))
    def get(self):
        return [SlaveView(slave) for slave in slaves.list_slaves()]


@blp.route("/slaves/<name>")
class Slave(MethodView):
    @blp.response(200, SlaveSchema)
    def get(self, name):
        return SlaveView(slaves.get_slave(name))

    @blp.arguments(SlavePatchSchema)
    @blp.response(200, SlaveSchema)
    def patch(self, changes, name):
        return SlaveView(slaves.update_slave(name, changes))

    @blp.response(204)
    def delete(self, name):
        slaves.delete_slave(name)


@channel.route("/slaves/register")
class Registration(MethodView):
    @channel.arguments(RegistrationSchema)
    def post(self, data):
        """Enroll by a key exchange bound to JOIN_TOKEN (or, for older slaves over HTTPS or from this
        host, with ``Authorization: Bearer <JOIN_TOKEN>``); answers the slave's credentials once."""
        exchange = {name: data[name] for name in EXCHANGE_FIELDS} if "proof" in data else None
        with counted_failures(Forbidden):
            _, answer = slaves.register_slave(data["name"], data["url"], exchange, bearer_token(),
                                              channel_private=private_channel())
        return answer, 201


@channel.route("/slaves/<name>/heartbeat")
class Heartbeat(MethodView):
    @channel.arguments(HeartbeatSchema)
    def post(self, data, name):
        slaves.record_heartbeat(g.slave, data["url"], data["last_edit"])
        return {"status": "ok", "enabled": g.slave.enabled, "takes_edits": True}


@channel.route("/slaves/<name>/reports")
class Reports(MethodView):
    @channel.arguments(ReportSchema)
    def post(self, report, name):
        return {"recorded": distribution.record_slave_report(g.slave, report)}
