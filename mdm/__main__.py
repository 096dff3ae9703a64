"""The ``mdm`` console script (also ``python -m mdm``): Flask's CLI around the app factory."""

import sys

from flask.cli import FlaskGroup

from . import create_app


def main():
    """Run the ``mdm`` command with the arguments it was given."""
    cli = FlaskGroup(create_app=lambda: create_app(), load_dotenv=False)
    cli.main(args=sys.argv[1:], prog_name="mdm")


if __name__ == "__main__":
    main()
