"""The SCIM 2.0 blueprint (RFC 7644) mounted at /scim/v2."""

from flask import Blueprint

URL_PREFIX = "/scim/v2"
CONTENT_TYPE = "application/scim+json"

bp = Blueprint("scim", __name__, url_prefix=URL_PREFIX)

# Importing the view modules registers their routes on bp.
from . import bulk  # noqa: E402,F401
from . import views  # noqa: E402,F401
