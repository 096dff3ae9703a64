"""The ``mdm`` command: Flask's CLI plus serve, token, client, attribute, user and check commands."""

import contextlib
import json
import os
import re
import stat
import sys
from datetime import timedelta

import click
from flask import current_app
from flask.cli import with_appcontext

from . import __version__
from . import files
from . import hosts
from . import webhooks
from .activity import audit
from .activity import writer
from .auth import clear_failures
from .auth import ensure_setup_code
from .auth import forget_setup_code
from .auth import password_problem
from .console.directory_export import FORMATS
from .console.directory_export import groups_text
from .console.directory_export import users_text
from .copydb import CopyError
from .copydb import copy_database
from .db import backup
from .db import database
from .db import is_url
from .db import lock_named
from .db import postgres
from .db import true
from .db import write_transaction
from .models import IDPS
from .models import Admin
from .models import BearerToken
from .models import CustomAttribute
from .models import Group
from .models import OAuthClient
from .models import TokenError
from .models import User
from .models import duplicate_attribute
from .models import groups_of
from .models import utcnow
from .scim import URL_PREFIX
from .scim import filters
from .scim import serialize
from .scim.errors import ScimError
from .scim.http import user_type
from .scim.paths import TOKEN_PATH
from .scim.schema import CUSTOM_TYPES
from .scim.schema import GROUP_TYPE
from .server import default_threads
from .server import serve

ATTRIBUTE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def progress_bar(length, label):
    """Return a progress bar on stderr, shown only when stderr is a terminal."""
    # Off a terminal click would still print the label once; scripts and logs
    # get nothing, and stdout stays for the command's output.
    return click.progressbar(
        length=length, label=label, file=sys.stderr, hidden=not sys.stderr.isatty()
    )


def target_url(host="127.0.0.1", port=8080):
    """Return the Target SCIM URL an IdP should be given."""
    public = current_app.config.get("PUBLIC_URL")
    if public:
        return public.rstrip("/") + URL_PREFIX
    return f"http://{host}:{port}{URL_PREFIX}"


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    help="Worker threads [default: 4 on SQLite, 8 on PostgreSQL].",
)
@with_appcontext
def serve_command(host, port, threads):
    """Serve the console and the SCIM API with waitress."""

    app = current_app._get_current_object()
    threads = threads or default_threads()
    click.echo(f"mdm {__version__} serving on http://{host}:{port}/", err=True)
    click.echo(f"Data folder: {app.instance_path}", err=True)
    if postgres():
        click.echo("Database: PostgreSQL (MDM_DATABASE_URL)", err=True)
    click.echo(f"Target SCIM URL: {target_url(host, port)}", err=True)
    served = hosts.served_address(host)
    if served and served not in app.trusted_hosts:
        app.trusted_hosts.append(served)
    click.echo(
        f"Trusted hosts: {', '.join(hosts.trusted_hosts(app))} (requests naming "
        "any other host get 400; set MDM_PUBLIC_URL or MDM_TRUSTED_HOSTS).",
        err=True,
    )

    code = ensure_setup_code(app)
    if code:
        click.echo(
            f"No administrator yet. Create one at http://{host}:{port}/setup?code={code}"
            " (or run `mdm admin create NAME`).",
            err=True,
        )
    with database.connection_context():
        if BearerToken.select().count() == 0 and OAuthClient.select().count() == 0:
            click.echo(
                "No SCIM token yet: generate one in the console under User "
                "Provisioning, or run `mdm token create --idp entra`.",
                err=True,
            )
    worker = webhooks.start(app)
    try:
        serve(app, host, port, threads)
    finally:
        worker.stop()
    click.echo("mdm stopped.", err=True)


@click.group("token")
def token_group():
    """Manage the bearer tokens identity providers use for SCIM."""


@token_group.command("create")
@click.option("--idp", required=True, type=click.Choice(sorted(IDPS)))
@click.option("--label", default="", help="A name to recognise the token by.")
@click.option("--expires-in", type=click.IntRange(1, 3650), help="Days until expiry.")
@with_appcontext
def token_create(idp, label, expires_in):
    """Create a token; print it once on stdout and the Target SCIM URL on stderr."""
    with database.connection_context():
        try:
            token, secret = BearerToken.issue(idp, label, "cli", expires_in)
        except TokenError as error:
            raise click.ClickException(str(error)) from None
    audit("SCIM Token Created", _details(token), actor="cli")
    click.echo(secret)
    click.echo(f"Target SCIM URL: {target_url()}", err=True)
    click.echo(
        f"Token {token.id} ({token.key}) for {token.idp_name}; it is shown only now.",
        err=True,
    )


def _when(value):
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@with_appcontext
def token_list(as_json):
    """List tokens without their secrets."""
    with database.connection_context():
        tokens = list(BearerToken.select().order_by(BearerToken.idp, BearerToken.id))
    if as_json:
        _echo_credentials(tokens, "key")
        return
    if not tokens:
        click.echo("No tokens.", err=True)
        return
    click.echo(
        "ID  IDP       TOKEN ID      STATUS    CREATED           EXPIRES           LAST USED         LABEL / LAST CLIENT"
    )
    for t in tokens:
        click.echo(
            f"{t.id:<3} {t.idp:<9} {t.key:<13} {t.status:<9} {_when(t.created_at):<17} "
            f"{_when(t.expires_at):<17} {_when(t.last_used_at):<17} "
            f"{t.label or '-'} / {t.last_user_agent or '-'}"
        )


def _details(token):
    return f"IdP: {token.idp_name}; token {token.key}"


def _token(token_id):
    token = BearerToken.get_or_none(BearerToken.id == token_id)
    if token is None:
        raise click.ClickException(f"No token with id {token_id}.")
    return token


@token_group.command("set-active")
@click.argument("token_id", type=int)
@with_appcontext
def token_set_active(token_id):
    """Let a token authenticate again."""
    with database.connection_context():
        token = _token(token_id)
        token.set_active(True)
    audit("SCIM Token Enabled", _details(token), actor="cli")
    click.echo(f"Token {token_id} is active.", err=True)


@token_group.command("set-inactive")
@click.argument("token_id", type=int)
@with_appcontext
def token_set_inactive(token_id):
    """Stop a token from authenticating without removing it."""
    with database.connection_context():
        token = _token(token_id)
        token.set_active(False)
    audit("SCIM Token Disabled", _details(token), actor="cli")
    click.echo(f"Token {token_id} is inactive.", err=True)


@token_group.command("renew")
@click.argument("token_id", type=int)
@with_appcontext
def token_renew(token_id):
    """Issue a new secret in the token's slot; the old one stops working at once."""
    with database.connection_context():
        token = _token(token_id)
        secret = token.renew()
    audit("SCIM Token Renewed", _details(token), actor="cli")
    click.echo(secret)
    click.echo(f"Target SCIM URL: {target_url()}", err=True)


@token_group.command("remove")
@click.argument("token_id", type=int)
@with_appcontext
def token_remove(token_id):
    """Delete a token; users and groups it provisioned stay."""
    with database.connection_context():
        token = _token(token_id)
        token.delete_instance()
    audit("SCIM Token Deleted", _details(token), actor="cli")
    click.echo(f"Token {token_id} removed.", err=True)


@click.group("client")
def client_group():
    """Manage OAuth clients, which fetch short-lived access tokens for SCIM."""


def _client_details(client):
    return f"IdP: {client.idp_name}; client {client.client_id}"


def _client(ident):
    """Find a client by its row id or its client_id."""
    if ident.isdigit():
        client = OAuthClient.get_or_none(OAuthClient.id == int(ident))
    else:
        client = OAuthClient.get_or_none(OAuthClient.client_id == ident)
    if client is None:
        raise click.ClickException(f"No OAuth client {ident}.")
    return client


def token_endpoint():
    """Return the token endpoint's URL, beside the Target SCIM URL."""
    return target_url().removesuffix(URL_PREFIX) + TOKEN_PATH


@client_group.command("create")
@click.option("--idp", required=True, type=click.Choice(sorted(IDPS)))
@click.option("--label", default="", help="A name to recognise the client by.")
@click.option(
    "--expires-in", type=click.IntRange(1, 3650), help="Days until the secret expires."
)
@with_appcontext
def client_create(idp, label, expires_in):
    """Create a client; print its id, its secret (only now) and the token endpoint."""
    with database.connection_context():
        try:
            client, secret = OAuthClient.issue(idp, label, "cli", expires_in)
        except TokenError as error:
            raise click.ClickException(str(error)) from None
    audit("OAuth Client Created", _client_details(client), actor="cli")
    click.echo(f"client_id: {client.client_id}")
    click.echo(f"client_secret: {secret}")
    click.echo(f"token_endpoint: {token_endpoint()}")
    click.echo(f"Target SCIM URL: {target_url()}", err=True)
    click.echo(
        f"OAuth client {client.id} for {client.idp_name}; the secret is shown only now.",
        err=True,
    )


def _iso(value):
    return value.isoformat(timespec="seconds") + "Z" if value else None


def _echo_credentials(credentials, public_id):
    """Print tokens or OAuth clients as one JSON array, under their public id's name."""
    rows = [
        {
            "id": c.id,
            public_id: c.key,  # an OAuth client's key is its client_id
            "idp": c.idp,
            "label": c.label,
            "status": c.status,
            "created_at": _iso(c.created_at),
            "created_by": c.created_by,
            "expires_at": _iso(c.expires_at),
            "renewed_at": _iso(c.renewed_at),
            "last_used_at": _iso(c.last_used_at),
            "last_user_agent": c.last_user_agent,
        }
        for c in credentials
    ]
    click.echo(json.dumps(rows, indent=2))


@client_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@with_appcontext
def client_list(as_json):
    """List OAuth clients without their secrets."""
    with database.connection_context():
        clients = list(OAuthClient.select().order_by(OAuthClient.idp, OAuthClient.id))
    if as_json:
        _echo_credentials(clients, "client_id")
        return
    if not clients:
        click.echo("No OAuth clients.", err=True)
        return
    click.echo(
        "ID  IDP       CLIENT ID              STATUS    CREATED           EXPIRES           LAST USED         LABEL / LAST CLIENT"
    )
    for c in clients:
        click.echo(
            f"{c.id:<3} {c.idp:<9} {c.client_id:<22} {c.status:<9} "
            f"{_when(c.created_at):<17} {_when(c.expires_at):<17} "
            f"{_when(c.last_used_at):<17} {c.label or '-'} / {c.last_user_agent or '-'}"
        )


@client_group.command("set-active")
@click.argument("ident", metavar="ID")
@with_appcontext
def client_set_active(ident):
    """Let a client get access tokens again."""
    with database.connection_context():
        client = _client(ident)
        client.set_active(True)
    audit("OAuth Client Enabled", _client_details(client), actor="cli")
    click.echo(f"OAuth client {client.client_id} is active.", err=True)


@client_group.command("set-inactive")
@click.argument("ident", metavar="ID")
@with_appcontext
def client_set_inactive(ident):
    """Stop a client and revoke its access tokens, without removing it."""
    with database.connection_context():
        client = _client(ident)
        client.set_active(False)
    audit("OAuth Client Disabled", _client_details(client), actor="cli")
    click.echo(
        f"OAuth client {client.client_id} is inactive; its access tokens are revoked.",
        err=True,
    )


@client_group.command("renew")
@click.argument("ident", metavar="ID")
@with_appcontext
def client_renew(ident):
    """Issue a new secret; the old one and every access token stop working at once."""
    with database.connection_context():
        client = _client(ident)
        secret = client.renew()
    audit("OAuth Client Renewed", _client_details(client), actor="cli")
    click.echo(f"client_id: {client.client_id}")
    click.echo(f"client_secret: {secret}")
    click.echo(f"token_endpoint: {token_endpoint()}")


@client_group.command("remove")
@click.argument("ident", metavar="ID")
@with_appcontext
def client_remove(ident):
    """Delete a client and its access tokens; users and groups stay."""
    with database.connection_context():
        client = _client(ident)
        client.remove()
    audit("OAuth Client Deleted", _client_details(client), actor="cli")
    click.echo(f"OAuth client {client.client_id} removed.", err=True)


@click.group("attribute")
def attribute_group():
    """Manage custom user attributes in the SCIM extension schema."""


@attribute_group.command("add")
@click.argument("name")
@click.option("--type", "type_", default="string", type=click.Choice(CUSTOM_TYPES))
@with_appcontext
def attribute_add(name, type_):
    """Define a custom user attribute an IdP can map."""
    if not ATTRIBUTE_NAME.match(name):
        raise click.ClickException(
            "An attribute name starts with a letter and has only letters, digits, - and _."
        )
    with database.connection_context():
        existing = CustomAttribute.get_or_none(CustomAttribute.name == name)
        if existing:
            raise click.ClickException(duplicate_attribute(existing.name, name))
        CustomAttribute.create(name=name, type=type_)
    audit("Custom Attribute Added", f"{name} ({type_})", actor="cli")
    urn = current_app.config["SCIM_CUSTOM_SCHEMA"]
    click.echo(f"{urn}:{name}")


@attribute_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@with_appcontext
def attribute_list(as_json):
    """List custom user attributes with their full SCIM paths."""
    urn = current_app.config["SCIM_CUSTOM_SCHEMA"]
    with database.connection_context():
        definitions = list(CustomAttribute.definitions())
    if as_json:
        rows = [
            {"name": name, "type": type_, "path": f"{urn}:{name}"}
            for name, type_ in definitions
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for name, type_ in definitions:
        click.echo(f"{urn}:{name}\t{type_}")


@attribute_group.command("remove")
@click.argument("name")
@with_appcontext
def attribute_remove(name):
    """Delete a custom user attribute definition (stored values stop being returned)."""
    with database.connection_context():
        removed = CustomAttribute.delete().where(CustomAttribute.name == name).execute()
    if not removed:
        raise click.ClickException(f"No attribute {name}.")
    audit("Custom Attribute Deleted", name, actor="cli")
    click.echo(f"Attribute {name} removed.", err=True)


@click.command("backup")
@click.argument("path", type=click.Path(dir_okay=False))
@with_appcontext
def backup_command(path):
    """Write a consistent copy of the database to PATH, even while serving."""

    if postgres():
        raise click.ClickException(
            "mdm backup copies a SQLite database; back up PostgreSQL with "
            "pg_dump (see the README)."
        )
    if os.path.exists(path):
        raise click.ClickException(f"{path} exists; choose a new file.")
    with contextlib.ExitStack() as stack:
        # The page count is known once the copy starts.
        shown = {}

        def progress(copied, total):
            if not shown:
                shown["bar"] = stack.enter_context(progress_bar(total, "Backing up"))
                shown["pages"] = 0
            shown["bar"].update(copied - shown["pages"])
            shown["pages"] = copied

        try:
            pages = backup(path, progress)
        except FileExistsError:
            raise click.ClickException(f"{path} exists; choose a new file.") from None
    click.echo(f"Backed up {pages} pages to {path}.", err=True)


@click.command("copy-db")
@click.option(
    "--to",
    "url",
    required=True,
    help="The empty PostgreSQL database: postgresql://user:password@host/dbname",
)
@with_appcontext
def copy_db_command(url):
    """Copy this SQLite installation into PostgreSQL, everything, and verify the counts."""

    if current_app.config.get("DATABASE_URL"):
        raise click.ClickException("The installation already uses PostgreSQL.")
    if not is_url(url):
        raise click.ClickException("--to takes a postgresql:// URL.")

    writer.flush()
    try:
        counts = copy_database(
            current_app.config["DATABASE"],
            current_app.config["ACTIVITY_DATABASE"],
            url,
            echo=lambda line: click.echo(line, err=True),
            progress=lambda table, rows: progress_bar(rows, table),
        )
    except CopyError as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"Copied and verified {sum(counts.values())} rows in {len(counts)} tables. "
        "Set MDM_DATABASE_URL to the new database and restart.",
        err=True,
    )


@click.group("user")
def user_group():
    """List, export and purge users."""


class FilterError(click.ClickException):
    """A --filter the SCIM filter engine refuses: a usage error."""

    exit_code = 2


# Users read per query by `mdm user list`, so a large directory streams.
LIST_BATCH = 500


def _matching_users(where, start_index, count):
    """Yield live users matching ``where`` in id order, a batch at a time."""
    last = None
    skip = start_index - 1
    while count is None or count > 0:
        limit = LIST_BATCH if count is None else min(LIST_BATCH, count)
        query = User.live().where(where).order_by(User.id).limit(limit)
        if last is None:
            query = query.offset(skip)
        else:
            query = query.where(User.id > last)
        batch = list(query)
        if not batch:
            return
        yield batch
        last = batch[-1].id
        if count is not None:
            count -= len(batch)


@user_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of SCIM users.")
@click.option(
    "--filter",
    "filter_",
    metavar="SCIM-FILTER",
    help="Only users matching a SCIM filter, e.g. 'userName sw \"a\"'.",
)
@click.option("--count", type=click.IntRange(1), help="List at most this many users.")
@click.option(
    "--start-index",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Start at the Nth match (with --count, for paging).",
)
@with_appcontext
def user_list(as_json, filter_, count, start_index):
    """List provisioned users (not deprovisioned ones), in the order they arrived."""
    with database.connection_context():
        resource_type = user_type()
        where = true()
        if filter_ is not None:
            try:
                where = filters.to_expression(filters.parse(filter_), resource_type)
            except ScimError as error:
                raise FilterError(
                    f"Bad --filter: {error.detail or error.scim_type}"
                ) from None
        batches = _matching_users(where, start_index, count)
        if as_json:
            _echo_json_users(batches, resource_type)
            return
        shown = 0
        for batch in batches:
            if not shown:
                click.echo(
                    f"{'ID':<36} {'USERNAME':<30} {'STATUS':<8} {'SOURCE':<8} NAME"
                )
            for u in batch:
                status = "active" if u.active else "disabled"
                click.echo(
                    f"{u.scim_id:<36} {u.user_name:<30} {status:<8} "
                    f"{u.source:<8} {u.display_name or '-'}"
                )
            shown += len(batch)
    if not shown:
        click.echo("No users.", err=True)


def _echo_json_users(batches, resource_type):
    """Write a JSON array of SCIM users, one per line, as the batches arrive."""
    base = target_url()
    separator = "[\n"
    for batch in batches:
        member_of = groups_of([u.id for u in batch])
        for u in batch:
            resource = serialize.user(u, base, member_of.get(u.id, ()), resource_type)
            click.echo(separator + json.dumps(resource), nl=False)
            separator = ",\n"
    click.echo("[]" if separator == "[\n" else "\n]")


def _export_options(command):
    """Add the options `mdm user export` and `mdm group export` share."""
    command = click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False, writable=True, allow_dash=True),
        default="-",
        help="Write to this file instead of standard output.",
    )(command)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="csv",
        show_default=True,
        help="CSV (cells a spreadsheet would run as formulas are defused) or JSON.",
    )(command)


def _write_export(chunks, output):
    """Write the text ``chunks`` to ``output`` ("-" for standard output) as they come."""
    with click.open_file(output, "w", encoding="utf-8", atomic=output != "-") as out:
        for chunk in chunks:
            out.write(chunk)


@user_group.command("export")
@_export_options
@click.option(
    "--filter",
    "filter_",
    metavar="SCIM-FILTER",
    help="Only users matching a SCIM filter, e.g. 'active eq false'.",
)
@with_appcontext
def user_export(fmt, output, filter_):
    """Export provisioned users with their groups as CSV or JSON, read in batches."""
    with database.connection_context():
        query = User.live()
        if filter_ is not None:
            try:
                where = filters.to_expression(filters.parse(filter_), user_type())
            except ScimError as error:
                raise FilterError(
                    f"Bad --filter: {error.detail or error.scim_type}"
                ) from None
            query = query.where(where)
    _write_export(users_text(query, fmt), output)


@user_group.command("purge")
@click.option(
    "--older-than",
    type=click.IntRange(0),
    default=0,
    metavar="DAYS",
    help="Only users deprovisioned at least DAYS days ago.",
)
@click.option("--yes", is_flag=True, help="Purge without asking.")
@with_appcontext
def user_purge(older_than, yes):
    """Delete deprovisioned users and their group memberships for good."""
    through = utcnow() - timedelta(days=older_than)
    with database.connection_context():
        count = User.purgeable(through).count()
    if not count:
        click.echo("No deprovisioned users to purge.", err=True)
        return
    plural = "s" if count != 1 else ""
    if not yes:
        click.confirm(
            f"Purge {count} deprovisioned user{plural} for good?", abort=True, err=True
        )
    with database.connection_context(), progress_bar(count, "Purging") as bar:
        removed = User.purge(through, bar.update)
    audit("Deprovisioned Users Purged", f"{removed} users", actor="cli")
    click.echo(
        f"Purged {removed} deprovisioned user{'s' if removed != 1 else ''}.", err=True
    )


@click.group("group")
def group_group():
    """Export provisioned groups."""


@group_group.command("export")
@_export_options
@click.option(
    "--filter",
    "filter_",
    metavar="SCIM-FILTER",
    help="Only groups matching a SCIM filter, e.g. 'displayName sw \"Sales\"'.",
)
@with_appcontext
def group_export(fmt, output, filter_):
    """Export provisioned groups with their members as CSV or JSON, read in batches."""
    query = Group.live()
    if filter_ is not None:
        try:
            where = filters.to_expression(filters.parse(filter_), GROUP_TYPE)
        except ScimError as error:
            raise FilterError(
                f"Bad --filter: {error.detail or error.scim_type}"
            ) from None
        query = query.where(where)
    _write_export(groups_text(query, fmt), output)


# A credential expiring this soon is reported by `mdm check`.
EXPIRY_WARNING = timedelta(days=14)


def _finding(code, problem, fix):
    return {"code": code, "problem": problem, "fix": fix}


def _settings_findings(app):
    """Findings about PUBLIC_URL, TRUSTED_HOSTS and PROXY_FIX."""
    found = []
    public = app.config.get("PUBLIC_URL") or ""
    https = public.lower().startswith("https://")
    if not public:
        found.append(
            _finding(
                "public-url-unset",
                "MDM_PUBLIC_URL is not set, so links and meta.location name "
                "whatever host a request carries.",
                "Set MDM_PUBLIC_URL=https://<the host identity providers use>.",
            )
        )
        if not app.trusted_hosts:
            found.append(
                _finding(
                    "trusted-hosts-unset",
                    "Neither MDM_PUBLIC_URL nor MDM_TRUSTED_HOSTS is set, so only "
                    "loopback addresses may be named in requests.",
                    "Set MDM_PUBLIC_URL, or MDM_TRUSTED_HOSTS to the served host names.",
                )
            )
    elif not https:
        found.append(
            _finding(
                "public-url-not-https",
                f"MDM_PUBLIC_URL is {public}, not https: tokens and passwords "
                "would cross the internet in clear text.",
                "Serve mdm behind an https proxy and set MDM_PUBLIC_URL=https://...",
            )
        )
    if https and not int(app.config.get("PROXY_FIX") or 0):
        found.append(
            _finding(
                "proxy-fix-unset",
                "MDM_PUBLIC_URL is https but MDM_PROXY_FIX is not set, so client "
                "addresses and the scheme are the proxy's.",
                "Set MDM_PROXY_FIX=1 (the number of proxies in front of mdm).",
            )
        )
    return found


def _database_findings(now):
    """Findings about administrators, credentials and the database's collation."""
    found = []
    if not Admin.select().exists():
        found.append(
            _finding(
                "no-admin",
                "There is no administrator; anyone holding the setup link can "
                "become one.",
                "Run `mdm admin create NAME`.",
            )
        )
    credentials = list(BearerToken.select()) + list(OAuthClient.select())
    if not any(c.status == "Active" for c in credentials):
        found.append(
            _finding(
                "no-credential",
                "No active SCIM token or OAuth client: no identity provider can "
                "provision.",
                "Run `mdm token create --idp IDP` or `mdm client create --idp IDP`.",
            )
        )
    for c in credentials:
        days = c.days_until_expiry(EXPIRY_WARNING, now)
        if days is None:
            continue
        # Renewing keeps the expiry date: the way out is a second credential.
        if isinstance(c, BearerToken):
            what, kind = f"SCIM token {c.id} ({c.key})", "token"
        else:
            what, kind = f"OAuth client {c.client_id}", "client"
        found.append(
            _finding(
                "credential-expiring",
                f"{what} for {c.idp_name} expires in {days} day"
                f"{'s' if days != 1 else ''} ({_when(c.expires_at)} UTC).",
                f"Run `mdm {kind} create --idp {c.idp}`, give the identity provider "
                f"the new secret, then `mdm {kind} remove {c.id}`.",
            )
        )
    # Asked of the ordering itself, not of datcollate: an ICU database lists
    # C there and still sorts by its locale.
    if (
        postgres()
        and database.execute_sql("SELECT 'a'::text < 'B'::text").fetchone()[0]
    ):
        found.append(
            _finding(
                "collation",
                "The PostgreSQL database sorts text by a locale, not by C collation: "
                "sortBy orders differ from SQLite's and can change with the server's "
                "locale data.",
                "Create the database with LOCALE_PROVIDER libc LC_COLLATE 'C' "
                "TEMPLATE template0 and move the data with pg_dump.",
            )
        )
    return found


def _file_findings(app):
    """Findings about data-folder files other users may read."""
    paths = [
        app.instance_path,
        os.path.join(app.instance_path, "secret_key"),
        os.path.join(app.instance_path, "config.py"),
    ]
    if not postgres():
        activity = app.config.get("ACTIVITY_DATABASE") or os.path.join(
            os.path.dirname(os.path.abspath(app.config["DATABASE"])), "activity.sqlite"
        )
        paths += files.sqlite_family(app.config["DATABASE"])
        paths += files.sqlite_family(activity)
    found = []
    for path in paths:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            found.append(
                _finding(
                    "readable-by-others",
                    f"{path} is readable by other users (mode {mode:o}).",
                    f"Run `chmod go= {path}` as its owner.",
                )
            )
    return found


@click.command("check")
@click.option("--json", "as_json", is_flag=True, help="The findings as JSON.")
@with_appcontext
def check_command(as_json):
    """Report what an internet-facing deployment is missing; exit 1 if anything is."""
    app = current_app._get_current_object()
    with database.connection_context():
        findings = _settings_findings(app)
        findings += _database_findings(utcnow())
    findings += _file_findings(app)
    if as_json:
        click.echo(json.dumps({"ok": not findings, "findings": findings}, indent=2))
    elif findings:
        for f in findings:
            click.echo(f"{f['problem']} Fix: {f['fix']}")
    else:
        click.echo(
            f"OK: {app.config.get('PUBLIC_URL')} behind a proxy, administrators, "
            "active credentials and private files."
        )
    if findings:
        sys.exit(1)


@click.group("admin")
def admin_group():
    """Manage console administrators."""


def _new_password(password_stdin, username):
    """Return a new password for ``username`` (stdin's first line, or prompted twice), checked."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    problem = password_problem(password, username)
    if problem:
        raise click.ClickException(f"Password refused. {problem}")
    return password


password_stdin_option = click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input."
)


def _admin(username):
    admin = Admin.get_or_none(Admin.username == username)
    if admin is None:
        raise click.ClickException(f"No administrator {username}.")
    return admin


@admin_group.command("create")
@click.argument("username")
@password_stdin_option
@with_appcontext
def admin_create(username, password_stdin):
    """Create an administrator; the password is prompted for, or read from stdin."""
    if not username.strip() or any(c.isspace() for c in username):
        raise click.ClickException("A username has no spaces.")
    password = _new_password(password_stdin, username)
    with database.connection_context():
        if Admin.get_or_none(Admin.username == username):
            raise click.ClickException(f"Administrator {username} already exists.")
        admin = Admin(username=username)
        admin.set_password(password)
        admin.save()
    audit("Administrator Created", f"{username} (mdm admin create)", actor="cli")

    with database.connection_context():
        forget_setup_code()
    click.echo(f"Administrator {username} created.", err=True)


@admin_group.command("list")
@with_appcontext
def admin_list():
    """List administrators with when they were created and last signed in."""
    with database.connection_context():
        admins = list(Admin.select().order_by(Admin.username))
    if not admins:
        click.echo("No administrators.", err=True)
        return
    click.echo("USERNAME              CREATED           LAST SIGN-IN")
    for admin in admins:
        click.echo(
            f"{admin.username:<21} {_when(admin.created_at):<17} "
            f"{_when(admin.last_login_at)}"
        )


@admin_group.command("passwd")
@click.argument("username")
@password_stdin_option
@with_appcontext
def admin_passwd(username, password_stdin):
    """Set an administrator's password and sign out their sessions."""
    with database.connection_context():
        admin = _admin(username)
    password = _new_password(password_stdin, admin.username)
    admin.set_password(password)
    with database.connection_context():
        admin.end_sessions()
    audit(
        "Administrator Password Changed",
        f"{admin.username} (mdm admin passwd)",
        actor="cli",
    )
    click.echo(
        f"Password of {admin.username} changed; their sessions are signed out.",
        err=True,
    )


@admin_group.command("remove")
@click.argument("username")
@with_appcontext
def admin_remove(username):
    """Remove an administrator; the last one stays."""
    with database.connection_context():
        admin = _admin(username)
        # Counted and deleted under the write lock, so two removals at once
        # cannot both pass the count.
        with write_transaction():
            lock_named("admins")
            last = Admin.select().count() <= 1
            if not last:
                admin.delete_instance()
    if last:
        raise click.ClickException(
            f"{admin.username} is the only administrator; create another one first."
        )
    audit("Administrator Removed", f"{admin.username} (mdm admin remove)", actor="cli")
    click.echo(f"Administrator {admin.username} removed.", err=True)


@admin_group.command("unlock")
@click.argument("username")
@with_appcontext
def admin_unlock(username):
    """Clear an administrator's failed sign-ins, so every address may try at once."""
    with database.connection_context():
        admin = _admin(username)
        cleared = clear_failures(admin.username)
    audit("Administrator Unlocked", f"{admin.username} (mdm admin unlock)", actor="cli")
    click.echo(
        f"Cleared {cleared} failed sign-in{'s' if cleared != 1 else ''} of "
        f"{admin.username}.",
        err=True,
    )


@click.group("webhook")
def webhook_group():
    """Manage the endpoints that receive signed lifecycle events."""


def _endpoint(endpoint_id):
    from .models import WebhookEndpoint

    endpoint = WebhookEndpoint.get_or_none(WebhookEndpoint.id == endpoint_id)
    if endpoint is None:
        raise click.ClickException(f"No webhook with id {endpoint_id}.")
    return endpoint


def _allow_http():
    return webhooks._flag(current_app.config.get("WEBHOOK_ALLOW_HTTP"))


@webhook_group.command("add")
@click.argument("url")
@click.option("--events", default="", help="Event types, comma separated [all].")
@click.option("--label", default="", help="A name to recognise the endpoint by.")
@with_appcontext
def webhook_add(url, events, label):
    """Add an endpoint; print its signing secret once on stdout."""
    try:
        types = webhooks.parse_events(events)
        with database.connection_context():
            endpoint, secret = webhooks.add_endpoint(url, types, label, _allow_http())
    except webhooks.WebhookError as error:
        raise click.ClickException(str(error)) from None
    audit("Webhook Added", webhooks.describe(endpoint), actor="cli")
    click.echo(secret)
    click.echo(
        f"Webhook {endpoint.id} for {url}; the signing secret is shown only now.",
        err=True,
    )


@webhook_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@with_appcontext
def webhook_list(as_json):
    """List endpoints without their secrets."""
    from .models import WebhookEndpoint

    with database.connection_context():
        endpoints = list(WebhookEndpoint.select().order_by(WebhookEndpoint.id))
        queued = webhooks.pending_counts()
    if as_json:
        rows = [
            {
                "id": e.id,
                "url": e.url,
                "label": e.label,
                "events": e.event_types,
                "state": e.state,
                "pending": queued.get(e.id, 0),
                "created_at": _iso(e.created_at),
                "failing_since": _iso(e.failing_since),
            }
            for e in endpoints
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not endpoints:
        click.echo("No webhooks.", err=True)
        return
    click.echo("ID  STATE     PENDING  URL / EVENTS / LABEL")
    for e in endpoints:
        click.echo(
            f"{e.id:<3} {e.state:<9} {queued.get(e.id, 0):<8} {e.url} / "
            f"{','.join(e.event_types) or 'all'} / {e.label or '-'}"
        )


@webhook_group.command("remove")
@click.argument("endpoint_id", type=int)
@with_appcontext
def webhook_remove(endpoint_id):
    """Delete an endpoint and the events queued for it."""
    with database.connection_context():
        endpoint = _endpoint(endpoint_id)
        webhooks.remove_endpoint(endpoint)
    audit("Webhook Removed", webhooks.describe(endpoint), actor="cli")
    click.echo(f"Webhook {endpoint_id} removed.", err=True)


@webhook_group.command("rotate-secret")
@click.argument("endpoint_id", type=int)
@with_appcontext
def webhook_rotate(endpoint_id):
    """Replace an endpoint's signing secret; print the new one once."""
    with database.connection_context():
        endpoint = _endpoint(endpoint_id)
        secret = webhooks.rotate_secret(endpoint)
    audit("Webhook Secret Rotated", webhooks.describe(endpoint), actor="cli")
    click.echo(secret)


@webhook_group.command("test")
@click.argument("endpoint_id", type=int)
@with_appcontext
def webhook_test(endpoint_id):
    """Send a ping event to an endpoint now and print what it answered."""
    with database.connection_context():
        endpoint = _endpoint(endpoint_id)
    outcome = webhooks.ping(
        endpoint,
        float(current_app.config.get("WEBHOOK_TIMEOUT", 10)),
        _allow_http(),
    )
    click.echo(f"Webhook {endpoint_id}: {outcome}")
    if not outcome.ok:
        raise SystemExit(1)


# Every command mdm adds; mdm.__main__ offers them without building the app,
# which only the command that runs creates (with_appcontext).
COMMANDS = (
    serve_command,
    token_group,
    client_group,
    admin_group,
    attribute_group,
    backup_command,
    copy_db_command,
    user_group,
    group_group,
    check_command,
    webhook_group,
)


def init_app(app):
    """Register mdm's commands on the app's CLI (``app.test_cli_runner`` runs them)."""
    for command in COMMANDS:
        app.cli.add_command(command)
