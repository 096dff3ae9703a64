"""SCIM discovery (RFC 7644 §4): ServiceProviderConfig, Schemas and ResourceTypes."""

from flask import current_app

from . import schema
from . import serialize
from .blueprint import bp
from .errors import ScimError
from .http import base_url
from .http import token_endpoint_url
from .http import user_type


@bp.get("/ServiceProviderConfig", strict_slashes=False)
def query_service_provider_config():
    """Describe the features this server supports (RFC 7643 §5)."""
    base = base_url()
    return {
        "schemas": [schema.SERVICE_PROVIDER_CONFIG_SCHEMA],
        "patch": {"supported": True},
        "bulk": {
            "supported": True,
            "maxOperations": current_app.config["SCIM_BULK_MAX_OPERATIONS"],
            "maxPayloadSize": current_app.config["SCIM_BULK_MAX_PAYLOAD"],
        },
        "filter": {
            "supported": True,
            "maxResults": current_app.config["SCIM_MAX_RESULTS"],
        },
        "changePassword": {"supported": True},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "A bearer token generated for an identity-provider "
                "connection in the admin console or with `mdm token create`.",
                "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
                "primary": True,
            },
            {
                "type": "oauthbearertoken",
                "name": "OAuth 2.0 Client Credentials",
                "description": "An access token from the token endpoint "
                f"{token_endpoint_url()} (grant_type=client_credentials) for an "
                "OAuth client of a connection, sent as a bearer token.",
                "specUri": "https://www.rfc-editor.org/rfc/rfc6749",
            },
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{base}/ServiceProviderConfig",
        },
    }


def _schemas():
    return [*user_type().schemas, schema.GROUP]


@bp.get("/Schemas", strict_slashes=False)
def query_schemas():
    """List the schemas of every stored attribute (RFC 7643 §7)."""
    base = base_url()
    resources = [s.document(f"{base}/Schemas/{s.id}") for s in _schemas()]
    return serialize.list_response(resources, len(resources), 1)


@bp.get("/Schemas/<schema_id>", strict_slashes=False)
def query_schema(schema_id):
    """Return one schema by URN."""
    for item in _schemas():
        if item.id.lower() == schema_id.lower():
            return item.document(f"{base_url()}/Schemas/{item.id}")
    raise ScimError.not_found(f"Schema {schema_id} not found.")


def _resource_types():
    return [user_type(), schema.GROUP_TYPE]


@bp.get("/ResourceTypes", strict_slashes=False)
def query_resource_types():
    """List the resource types (RFC 7643 §6)."""
    base = base_url()
    resources = [
        t.document(f"{base}/ResourceTypes/{t.name}") for t in _resource_types()
    ]
    return serialize.list_response(resources, len(resources), 1)


@bp.get("/ResourceTypes/<type_id>", strict_slashes=False)
def query_resource_type(type_id):
    """Return one resource type by name."""
    for item in _resource_types():
        if item.name.lower() == type_id.lower():
            return item.document(f"{base_url()}/ResourceTypes/{item.name}")
    raise ScimError.not_found(f"ResourceType {type_id} not found.")
