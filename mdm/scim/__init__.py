"""The SCIM 2.0 API (RFC 7644), mounted at /scim/v2."""

# A request goes auth -> http (body, parameters) -> users / groups (writes,
# over resources) -> serialize; views, bulk and discovery hold the routes
# that connect them.

from . import bulk  # noqa: F401  (registers its route)
from . import discovery  # noqa: F401  (registers its routes)
from . import views  # noqa: F401  (registers its routes)
from .blueprint import bp
from .paths import CONTENT_TYPE
from .paths import URL_PREFIX
from .paths import is_api_path

__all__ = ["CONTENT_TYPE", "URL_PREFIX", "bp", "init_app", "is_api_path"]


def init_app(app, csrf=None):
    """Mount the API on ``app``; it takes bearer tokens, no cookies, so no CSRF check."""
    app.register_blueprint(bp)
    if csrf is not None:
        csrf.exempt(bp)
