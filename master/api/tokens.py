"""/api/v1/tokens: API tokens for admins; a new token's value is shown once, in the create answer."""

from flask import g, url_for
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from common.errors import Forbidden
from common.states import Role
from master.api import ApiBlueprint
from master.auth import authorize_request
from master.services import tokens

blp = ApiBlueprint("tokens", __name__, description="API tokens (admins only)")


@blp.before_request
def admins_only():
    """Tokens are admin business, reading them too; raises Unauthorized or Forbidden."""
    authorize_request()
    if g.api_token.role != Role.ADMIN.value:
        raise Forbidden("Only admin tokens may see or change tokens.")


class TokenSchema(Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=[validate.Length(min=1, max=64),
                                                  validate.Regexp(r"^[\w .@-]+$", error="Letters, digits, "
                                                                  "spaces and . _ @ - only.")])
    role = fields.String(load_default=Role.READONLY.value, validate=validate.OneOf([r.value for r in Role]))
    expires_in = fields.Integer(strict=True, load_only=True, allow_none=True, load_default=None,
                                validate=validate.Range(min=60, max=10 * 365 * 86400),
                                metadata={"description": "lifetime in seconds; null for no expiry"})
    created_at = fields.DateTime(dump_only=True)
    expires_at = fields.DateTime(dump_only=True)
    revoked_at = fields.DateTime(dump_only=True)
    last_used_at = fields.DateTime(dump_only=True)


class NewTokenSchema(TokenSchema):
    token = fields.String(dump_only=True, metadata={"description": "the token itself, shown only here"})


@blp.route("/tokens")
class Tokens(MethodView):
    @blp.response(200, TokenSchema(many=True))
    def get(self):
        return tokens.list_tokens()

    @blp.arguments(TokenSchema)
    @blp.response(201, NewTokenSchema)
    def post(self, data):
        plain, token = tokens.create_token(data["name"], data["role"], data["expires_in"])
        token.token = plain
        return token, {"Location": url_for("tokens.Token", token_id=token.id)}


@blp.route("/tokens/<id:token_id>")
class Token(MethodView):
    @blp.response(200, TokenSchema)
    def get(self, token_id):
        return tokens.get_token(token_id)

    @blp.response(200, TokenSchema)
    def delete(self, token_id):
        """Revoke the token (it stays listed as revoked)."""
        return tokens.revoke_token(token_id)
