"""The admin console: every page under /admin, in one blueprint."""

# ``base`` holds the blueprint, its guards and shared template helpers; each
# other module adds the routes of one console section to it on import.

from flask import redirect
from flask import url_for

from . import activity
from . import admins
from . import attributes
from . import audit
from . import clients
from . import dashboard
from . import directory
from . import directory_out
from . import mapping
from . import tokens
from . import webhooks
from .base import bp

# Imported for the routes they add to bp.
SECTIONS = (
    dashboard,
    directory,
    directory_out,
    mapping,
    tokens,
    clients,
    attributes,
    activity,
    audit,
    admins,
    webhooks,
)


def init_app(app):
    """Register the console and send the site root to its dashboard."""
    app.register_blueprint(bp)

    @app.get("/")
    def root():
        return redirect(url_for("console.dashboard"))

    # Browsers ask for /favicon.ico on their own; the icon is an SVG file.
    @app.get("/favicon.ico")
    def favicon():
        return redirect(url_for("static", filename="favicon.svg"), 301)
