"""The ``mdm`` console script (also ``python -m mdm``): Flask's CLI around the app factory."""

import sys

import click
from flask.cli import FlaskGroup
from peewee import OperationalError

from . import __version__
from . import create_app
from .models import SchemaError


def main():
    """Run the ``mdm`` command with the arguments it was given."""
    cli = FlaskGroup(
        create_app=lambda: create_app(),
        load_dotenv=False,
        add_version_option=False,  # Flask's prints Flask's version, not mdm's
    )
    click.version_option(__version__, prog_name="mdm", message="%(prog)s %(version)s")(
        cli
    )
    try:
        cli.main(args=sys.argv[1:], prog_name="mdm")
    except (OperationalError, SchemaError) as error:
        # A database that is down, unreadable or from a newer release: say
        # so in one line, as for any other usage error, not with a traceback.
        click.echo(f"Error: the database cannot be used: {error}".rstrip(), err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
