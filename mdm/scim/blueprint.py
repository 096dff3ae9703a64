"""The SCIM blueprint: bearer-token authentication, SCIM errors and the activity log."""

from flask import Blueprint
from werkzeug.exceptions import HTTPException

from .. import activity
from .auth import authenticate
from .auth import identify
from .errors import ScimError
from .http import scim_error_response
from .paths import CONTENT_TYPE
from .paths import URL_PREFIX
from .paths import is_api_path

bp = Blueprint("scim", "mdm.scim", url_prefix=URL_PREFIX)
bp.before_request(authenticate)


@bp.record_once
def _log_activity(state):
    # The activity log records every request under the API's prefix, routed
    # or not; it learns the layout here rather than importing this package.
    activity.serve_api(URL_PREFIX, is_api_path, identify)


@bp.after_request
def set_content_type(response):
    """Label every SCIM response, errors included, as application/scim+json."""
    # Reading is cheaper than setting, and most responses come labelled.
    if response.status_code != 204 and response.content_type != CONTENT_TYPE:
        response.headers["Content-Type"] = CONTENT_TYPE
    return response


@bp.errorhandler(ScimError)
def handle_scim_error(error):
    return scim_error_response(error)


@bp.errorhandler(HTTPException)
def handle_http_error(error):
    return scim_error_response(ScimError(error.code, None, error.description))
