"""The ``mdm`` command (also ``python -m mdm``): mdm's commands, and Flask's shell and routes."""

import sys

import click
from flask.cli import ScriptInfo
from flask.cli import routes_command
from flask.cli import shell_command
from peewee import OperationalError

from . import ConfigError
from . import __version__
from . import create_app
from .cli import COMMANDS
from .models import SchemaError


def main():
    """Run the ``mdm`` command with the arguments it was given."""
    # A plain click group, not Flask's FlaskGroup: that one builds the app to
    # list its commands, so even --help created the database. Here only a
    # command that runs builds it (with_appcontext asks the ScriptInfo).
    cli = click.Group(
        "mdm",
        help="A self-hosted SCIM 2.0 provisioning target with an admin console.",
        commands=[*COMMANDS, shell_command, routes_command],
    )
    click.version_option(__version__, prog_name="mdm", message="%(prog)s %(version)s")(
        cli
    )
    try:
        cli.main(
            args=sys.argv[1:],
            prog_name="mdm",
            obj=ScriptInfo(create_app=create_app, set_debug_flag=False),
        )
    except (OperationalError, SchemaError) as error:
        # A database that is down, unreadable or from a newer release: say
        # so in one line, as for any other usage error, not with a traceback.
        click.echo(f"Error: the database cannot be used: {error}".rstrip(), err=True)
        sys.exit(1)
    except ConfigError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
