"""Advice shown beside a failed provisioning request, chosen by its status and scimType."""

ANY = None
SERVER_ERRORS = range(500, 600)

# (status or statuses, scimType or scimTypes, methods, advice): the first match wins.
HINTS = (
    (
        401,
        ANY,
        ANY,
        "The IdP used a token that is inactive, removed or expired (or sent none). "
        "Entra quarantines provisioning after repeated 401s — generate or activate "
        "a token under User Provisioning and paste it into the IdP, then restart "
        "provisioning there.",
    ),
    (
        403,
        ANY,
        ANY,
        "Provisioning is disabled by the server's operator (SCIM_ENABLED is off): "
        "every SCIM request is refused until it is switched back on.",
    ),
    (
        409,
        "uniqueness",
        ANY,
        "Duplicate userName/displayName: a record with that name already exists — "
        "check for a deprovisioned or differently-cased duplicate (purge it, or "
        "rename one of them in the IdP).",
    ),
    (
        409,
        ANY,
        ANY,
        "The request conflicts with the record's current state; see detail.",
    ),
    (
        400,
        "invalidFilter",
        ANY,
        "The IdP sent a filter this server cannot parse or does not support; check "
        "the matching attribute in the IdP's mapping (usually userName or "
        "externalId) and see detail.",
    ),
    (
        400,
        ("invalidValue", "invalidSyntax"),
        ANY,
        "The IdP sent a value this server rejects; see detail.",
    ),
    (
        400,
        ("invalidPath", "noTarget"),
        ANY,
        "The PATCH path names an attribute or value filter this server does not "
        "support or cannot find; check the IdP's attribute mapping and see detail.",
    ),
    (
        400,
        "mutability",
        ANY,
        "The IdP tried to change a read-only attribute (such as id); remove that "
        "attribute from the IdP's mapping.",
    ),
    (
        400,
        "tooMany",
        ANY,
        "The query matched more results than the server returns at once; the IdP "
        "should page with startIndex and count.",
    ),
    (400, ANY, ANY, "The request was malformed; see detail."),
    (
        404,
        ANY,
        ("PATCH", "PUT", "DELETE"),
        "The IdP has a cached id that no longer exists here (it was purged or never "
        "created on this server); restart provisioning in the IdP so it matches "
        "users and groups again.",
    ),
    (
        404,
        ANY,
        ANY,
        "No record has that id. IdPs usually follow up by searching for the "
        "userName or displayName and creating the record.",
    ),
    (
        412,
        ANY,
        ANY,
        "The record changed since the IdP read it (its If-Match version is stale); "
        "the IdP should read it again and retry.",
    ),
    (
        413,
        ANY,
        ANY,
        "The request body is larger than this server accepts (MAX_CONTENT_LENGTH); "
        "very large group membership changes must be sent in smaller batches.",
    ),
    (
        415,
        ANY,
        ANY,
        "The IdP sent a Content-Type other than application/scim+json.",
    ),
    (
        SERVER_ERRORS,
        ANY,
        ANY,
        "The server failed while handling the request: check the server log at this "
        "time. The IdP retries on its own; repeated 5xx errors can make Entra "
        "quarantine provisioning.",
    ),
)


def _matches(rule, value):
    if rule is ANY:
        return True
    if isinstance(rule, (tuple, range)):
        return value in rule
    return value == rule


def hint(entry):
    """Return advice for a failed request (an object with status, scim_type and method), or None."""
    status = entry.status or 0
    scim_type = entry.scim_type or ""
    method = (entry.method or "").upper()
    for statuses, scim_types, methods, advice in HINTS:
        if (
            _matches(statuses, status)
            and _matches(scim_types, scim_type)
            and _matches(methods, method)
        ):
            return advice
    return None
