"""Entry point: ``app`` for WSGI servers; ``python app.py`` serves it like ``mdm serve``."""

import sys

from mdm import create_app

app = create_app()

if __name__ == "__main__":
    from mdm.__main__ import main

    sys.argv = ["mdm", "serve", *sys.argv[1:]]
    main()
