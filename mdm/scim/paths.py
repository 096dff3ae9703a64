"""Where the SCIM API lives; imports nothing of the app, so any module may ask."""

URL_PREFIX = "/scim/v2"
CONTENT_TYPE = "application/scim+json"
_SUBPATHS = URL_PREFIX + "/"


def is_api_path(path):
    """Tell whether a request path is under the SCIM API, routed or not."""
    return path == URL_PREFIX or path.startswith(_SUBPATHS)


# The OAuth token endpoint that issues access tokens for the API (mdm.oauth).
TOKEN_PATH = "/oauth/token"
