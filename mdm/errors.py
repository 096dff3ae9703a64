"""Application-wide error pages: SCIM JSON under /scim/v2, HTML everywhere else."""

from flask import current_app
from flask import render_template
from flask import request
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import InternalServerError

from .scim.errors import ScimError
from .scim.http import scim_error_response
from .scim.paths import is_api_path


def init_app(app):
    """Register the handlers that cover errors raised outside any blueprint view."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)


def _is_scim_request():
    return is_api_path(request.path)


def _http_error(error):
    # Routing 404s and 405s happen before the SCIM blueprint is chosen, so its
    # own handlers never see them; answer them here in SCIM form.
    if _is_scim_request():
        detail = error.description
        if error.code == 404:
            detail = f"No SCIM endpoint at {request.path}."
        elif error.code == 405:
            detail = f"{request.method} is not supported on {request.path}."
        response = scim_error_response(ScimError(error.code, None, detail))
        if error.code == 405:
            response.headers["Allow"] = ", ".join(error.valid_methods or ())
        return response
    return (
        render_template("errors/error.html", code=error.code, error=error),
        error.code,
    )


def _unexpected_error(error):
    if isinstance(error, HTTPException):
        return _http_error(error)
    # Log the traceback for the operator; never send it to the client.
    current_app.logger.exception(
        "Unhandled error on %s %s", request.method, request.path
    )
    if _is_scim_request():
        return scim_error_response(ScimError(500, None, "Internal server error."))
    return _http_error(InternalServerError())
