"""The SCIM 2.0 blueprint (RFC 7644) mounted at /scim/v2."""

from flask import Blueprint

URL_PREFIX = "/scim/v2"
CONTENT_TYPE = "application/scim+json"
_SUBPATHS = URL_PREFIX + "/"


def is_api_path(path):
    """Tell whether a request path is under the SCIM API, routed or not."""
    return path == URL_PREFIX or path.startswith(_SUBPATHS)


bp = Blueprint("scim", __name__, url_prefix=URL_PREFIX)

# Importing the view modules registers their routes on bp.
from . import bulk  # noqa: E402,F401
from . import views  # noqa: E402,F401
