"""The HTTP edge of the SCIM API: request bodies, list parameters, ETags and responses."""

import functools
import json

from flask import current_app
from flask import g
from flask import make_response
from flask import request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.exceptions import RequestEntityTooLarge

from ..models import CustomAttribute
from . import parse
from . import schema
from . import serialize
from .errors import ScimError
from .paths import CONTENT_TYPE
from .paths import TOKEN_PATH
from .paths import URL_PREFIX

JSON_TYPES = ("application/scim+json", "application/json", "text/json")


def scim_error_response(error):
    """Render a ScimError as a SCIM Error response (RFC 7644 §3.12)."""
    response = make_response(json.dumps(error.body()), error.status)
    response.headers["Content-Type"] = CONTENT_TYPE
    response.headers.update(error.headers)
    return response


def base_url():
    """Return the absolute SCIM base URL, honouring PUBLIC_URL behind a proxy."""
    public = current_app.config.get("PUBLIC_URL")
    if public:
        return public.rstrip("/") + URL_PREFIX
    key = (request.scheme, request.host, request.root_path)
    found = _base_urls.get(key)
    if found is None:
        # request.url_root converts the host to an IRI on every call; the
        # result depends on these three values only.
        if len(_base_urls) >= 64:
            _base_urls.clear()
        found = _base_urls[key] = request.url_root.rstrip("/") + URL_PREFIX
    return found


_base_urls = {}


def token_endpoint_url():
    """Return the absolute URL of the OAuth token endpoint, beside the SCIM base."""
    return base_url().removesuffix(URL_PREFIX) + TOKEN_PATH


def user_type():
    """Return the User resource type with the currently defined custom attributes."""
    # The definitions are read on every request (with the token, when there is
    # one), so a change by an administrator in any process applies to the next
    # request; only building the type is cached.
    token = g.get("scim_token")
    if token is not None:
        definitions = token.custom_attributes
    else:
        definitions = tuple(CustomAttribute.definitions())
    return _user_type(current_app.config["SCIM_CUSTOM_SCHEMA"], definitions)


@functools.lru_cache(maxsize=32)
def _user_type(custom_urn, definitions):
    return schema.user_type(custom_urn, definitions)


def token_idp():
    """Return the identity provider of the request's token, stored as a row's source."""
    token = g.get("scim_token")
    return token.idp if token is not None else "generic"


def request_body():
    """Return the request's JSON object; accept scim+json, json, or no content type."""
    mimetype = request.mimetype
    if mimetype and mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise ScimError(
            415,
            "invalidSyntax",
            f"Content-Type {mimetype} is not supported; send application/scim+json.",
        )
    try:
        raw = request.get_data(cache=True)  # kept for the activity log
    except ClientDisconnected:
        raise ScimError.invalid_syntax(
            "The request body is shorter than its Content-Length."
        ) from None
    limit = request.max_content_length
    if (
        limit is not None
        and request.content_length is None
        and len(raw) >= limit
        and request.input_stream.read(1)
    ):
        # Werkzeug cuts a streamed (chunked) body at the limit without failing.
        raise RequestEntityTooLarge()
    return parse.json_body(raw)


def list_params(source=None):
    """Read list, search and projection parameters from the query or a SearchRequest."""
    config = current_app.config
    params = parse.list_params(
        request.args if source is None else source,
        config["SCIM_DEFAULT_COUNT"],
        config["SCIM_MAX_RESULTS"],
    )
    params.attributes = _distinct(params.attributes)
    params.excluded = _distinct(params.excluded)
    return params


def _distinct(names):
    """Drop repeated names (compared without case), keeping the first spelling."""
    if not names:
        return names
    first = {}
    for name in names:
        first.setdefault(name.lower(), name)
    return list(first.values())


def projection():
    """Return the request's (attributes, excludedAttributes)."""
    params = list_params()
    return params.attributes, params.excluded


def respond(resource, status=200, headers=None):
    """Send a resource or message, with the ETag of a versioned one (RFC 7644 §3.14)."""
    return labelled(serialize.response(resource, status), resource, headers)


def labelled(response, resource, headers=None):
    """Give a response the ETag of the versioned resource it carries, and ``headers``."""
    version = resource.get("meta", {}).get("version")
    if version:
        response.headers["ETag"] = version
    if headers:
        response.headers.update(headers)
    return response


def no_content(row):
    """Answer 204 with the ETag of the row just written."""
    response = make_response("", 204)
    response.headers["ETag"] = serialize.etag(row)
    return response


def if_match():
    """Return the request's If-Match header, or None."""
    return request.headers.get("If-Match")


def _etags(header):
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def _names_version(header, current):
    # Weak comparison (RFC 7232 §2.3.2): W/ prefixes are ignored.
    bare = current.removeprefix("W/")
    tags = _etags(header)
    return "*" in tags or any(tag.removeprefix("W/") == bare for tag in tags)


def check_if_match(row, header):
    """Refuse a write whose If-Match (or Bulk ``version``) names another version (412)."""
    if not header:
        return
    current = serialize.etag(row)
    if not _names_version(header, current):
        raise ScimError(
            412, None, f"The resource has changed: its version is now {current}."
        )


def not_modified(row):
    """Return a 304 response when If-None-Match names the current version, else None."""
    header = request.headers.get("If-None-Match")
    if not header or not _names_version(header, serialize.etag(row)):
        return None
    response = make_response("", 304)
    response.headers["ETag"] = serialize.etag(row)
    return response
