"""``python -m master``: API, scheduler, executor (and later the rsync daemon) in one process.

``python -m master tokens ...`` manages API tokens on the master host.
"""

import sys
import threading

import click

from common.config import load_settings, tls_context
from common.errors import ConfigError, MirrorSyncError
from common.serving import make_guarded_server
from common.states import Role
from master import schema


def build_app(create=True, announce=False):
    """The app on the configured database; ``announce`` names that database on stderr first."""
    from master import create_app
    try:
        settings = master_settings()
        if announce:
            click.echo(f"database: {schema.describe(settings['SQLALCHEMY_DATABASE_URI'])}", err=True)
        return create_app({"CREATE_DATABASE": create})
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def master_settings():
    """The master's settings as the server reads them, with the database URL resolved."""
    from master.paths import default_database_url
    settings = load_settings("master")
    settings["SQLALCHEMY_DATABASE_URI"] = settings["DATABASE_URL"] or default_database_url(settings["DATA_DIR"])
    return settings


@click.group(invoke_without_command=True)
@click.pass_context
def cli(ctx):
    """mirror-sync master. With no command: serve the API and run the scheduler."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve)


@cli.command()
def serve():
    """Serve the API and run the scheduler and executor in this process."""
    import logging
    from master.scheduler import SchedulerService, wait_for_signal

    from master.rsyncd import RsyncDaemonManager

    app = build_app()
    log = logging.getLogger("master")
    service = SchedulerService(app)
    try:
        service.start()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    daemon = RsyncDaemonManager(app)
    try:
        daemon.start()
    except OSError as error:
        service.stop()
        raise click.ClickException(f"RSYNC_BINARY: cannot start the rsync daemon: {error.strerror}")
    try:
        server = make_guarded_server(app.config["API_HOST"], app.config["API_PORT"], app,
                                     ssl_context=tls_context(app.config))
    except OSError as error:
        service.stop()
        daemon.stop()
        raise click.ClickException(
            f"API_PORT: cannot listen on {app.config['API_HOST']}:{app.config['API_PORT']}: {error.strerror}")
    thread = threading.Thread(target=server.serve_forever, name="api", daemon=True)
    thread.start()
    scheme = "https" if tls_context(app.config) else "http"
    log.info("master API listening on %s://%s:%s", scheme, app.config["API_HOST"], app.config["API_PORT"])
    wait_for_signal()
    server.shutdown()
    server.server_close()
    service.stop()
    daemon.stop()


@cli.command("rsyncd-config")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Where to write rsyncd.conf (default DATA_DIR/.mirrorsync/rsyncd.conf).")
@click.option("--secrets", "secrets_path", type=click.Path(dir_okay=False), default=None,
              help="Where to write the 0600 secrets file it names.")
def rsyncd_config(config_path, secrets_path):
    """Write the rsync daemon configuration for a system rsync daemon (production)."""
    from master import rsyncd
    app = build_app()
    config_path = config_path or rsyncd.config_paths(app.config["DATA_DIR"])[0]
    with app.app_context():
        rsyncd.write_config(config_path, secrets_path)
    click.echo(f"wrote {config_path}; run: rsync --daemon --config={config_path}")


CREATE_HELP = "Make a new, empty database if the configured one does not exist."


@cli.group()
@click.option("--create", is_flag=True, help=CREATE_HELP)
@click.pass_context
def tokens(ctx, create):
    """Create, list and revoke API tokens in the master's database (named on stderr)."""
    ctx.obj = {"create": create}


def tokens_app():
    return build_app(create=click.get_current_context().obj["create"], announce=True)


@tokens.command("create")
@click.option("--name", required=True, help="Who or what the token is for.")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.READONLY.value,
              show_default=True)
@click.option("--expires-in", type=click.IntRange(min=60), default=None, help="Lifetime in seconds.")
def create_token(name, role, expires_in):
    """Create a token and print it once."""
    from master.services import tokens as service
    with tokens_app().app_context():
        plain, token = service.create_token(name, role, expires_in)
        click.echo(f"created token {token.id} ({token.name}, {token.role}); it is shown only once:", err=True)
        click.echo(plain)


@tokens.command("list")
def list_tokens():
    """List tokens (never their values)."""
    from master.services import tokens as service
    with tokens_app().app_context():
        click.echo(f"{'ID':>4}  {'NAME':<24} {'ROLE':<9} {'CREATED':<20} {'EXPIRES':<20} STATE")
        for token in service.list_tokens():
            state = "revoked" if token.revoked_at else "active"
            expires = token.expires_at.strftime("%Y-%m-%d %H:%M:%S") if token.expires_at else "never"
            click.echo(f"{token.id:>4}  {token.name:<24} {token.role:<9} "
                       f"{token.created_at:%Y-%m-%d %H:%M:%S}  {expires:<20} {state}")


@tokens.command("revoke")
@click.argument("token_id", type=int)
def revoke_token(token_id):
    """Revoke a token by its id."""
    from master.services import tokens as service
    with tokens_app().app_context():
        try:
            token = service.revoke_token(token_id)
        except MirrorSyncError as error:
            raise click.ClickException(error.message) from None
        click.echo(f"revoked token {token.id} ({token.name})")


@cli.group("db")
def database():
    """Show and upgrade the schema revision of the master's database."""


def _engine(create):
    """An engine on the configured database, announced on stderr; raises ClickException."""
    import os
    import sqlalchemy as sa
    from master.paths import state_dir
    try:
        settings = master_settings()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    url = settings["SQLALCHEMY_DATABASE_URI"]
    click.echo(f"database: {schema.describe(url)}", err=True)
    if not create and not schema.exists(url):
        raise click.ClickException(str(schema.missing(url)))
    os.makedirs(state_dir(settings["DATA_DIR"]), mode=0o700, exist_ok=True)
    engine = sa.engine.make_url(url)
    if engine.get_backend_name() == "sqlite" and engine.database:
        os.close(os.open(engine.database, os.O_CREAT | os.O_RDWR, 0o600))
    return sa.create_engine(url)


@database.command("current")
@click.option("--check", is_flag=True,
              help="Exit 1 unless the database is at the newest revision (for a service's ExecStartPre).")
def database_current(check):
    """Print the database's revision and whether it is the newest."""
    import sqlalchemy as sa
    engine = _engine(create=False)
    try:
        with engine.connect() as connection:
            revision = schema.current_revision(connection)
            found = schema.state(connection)
    except sa.exc.SQLAlchemyError as error:
        raise click.ClickException(f"DATABASE_URL: cannot read the database: {error.orig or error}") from None
    finally:
        engine.dispose()
    meanings = {"current": "the newest", "behind": f"behind {schema.head_revision()}; {schema.UPGRADE_HINT}",
                "ahead": "unknown to this release (a newer release upgraded it)",
                "unversioned": f"none: made before migrations; {schema.UPGRADE_HINT}",
                "empty": "none: the database is empty; run: python -m master db upgrade --create"}
    click.echo(f"{revision or 'none'} ({meanings[found]})")
    if check and found != "current":
        raise click.ClickException(f"the database is not at the newest revision {schema.head_revision()}; "
                                   f"{schema.UPGRADE_HINT}")


@database.command("upgrade")
@click.option("--create", is_flag=True, help=CREATE_HELP)
def database_upgrade(create):
    """Bring the database to the newest revision, keeping every row."""
    import sqlalchemy as sa
    engine = _engine(create)
    try:
        with engine.begin() as connection:
            found = schema.state(connection)
            if found == "empty" and not create:
                raise click.ClickException(str(schema.missing(engine.url)))
            if found == "ahead":
                raise click.ClickException(
                    f"the database is at revision {schema.current_revision(connection)}, which this "
                    "release does not know: it was upgraded by a newer release")
            before, after = schema.upgrade(connection)
    except sa.exc.SQLAlchemyError as error:
        raise click.ClickException(f"the upgrade failed and was rolled back: {error.orig or error}") from None
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"already at {after} (the newest)")
    else:
        click.echo(f"upgraded from {before or 'none'} to {after}")


if __name__ == "__main__":
    sys.exit(cli(prog_name="python -m master"))
