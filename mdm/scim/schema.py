"""SCIM schemas (RFC 7643 §4, §7, §8.7): attribute definitions, lookups and discovery documents."""

from dataclasses import dataclass
from dataclasses import field
from functools import cached_property

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
DEFAULT_CUSTOM_SCHEMA = "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SERVICE_PROVIDER_CONFIG_SCHEMA = (
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
)

CUSTOM_TYPES = ("string", "boolean", "integer")


@dataclass(frozen=True)
class Attribute:
    """One attribute or sub-attribute definition (RFC 7643 §7)."""

    name: str
    type: str = "string"
    multi_valued: bool = False
    description: str = ""
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    sub_attributes: tuple = ()
    canonical_values: tuple = ()
    reference_types: tuple = ()

    @property
    def complex(self):
        return self.type == "complex"

    def sub(self, name):
        """Return the sub-attribute called ``name`` (case-insensitive), or None."""
        return self._subs.get(name.lower())

    @cached_property
    def _subs(self):
        return _by_name(self.sub_attributes)

    def document(self):
        """Return the attribute as it appears in a /Schemas resource."""
        doc = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi_valued,
            "description": self.description or self.name,
            "required": self.required,
            "mutability": self.mutability,
            "returned": self.returned,
        }
        if self.type in ("string", "reference", "binary"):
            doc["caseExact"] = self.case_exact
        if self.type != "complex":
            doc["uniqueness"] = self.uniqueness
        if self.canonical_values:
            doc["canonicalValues"] = list(self.canonical_values)
        if self.reference_types:
            doc["referenceTypes"] = list(self.reference_types)
        if self.sub_attributes:
            doc["subAttributes"] = [sub.document() for sub in self.sub_attributes]
        return doc


@dataclass(frozen=True)
class Schema:
    """A schema: its URN, name and top-level attributes."""

    id: str
    name: str
    description: str
    attributes: tuple = field(default_factory=tuple)

    def attribute(self, name):
        """Return the top-level attribute called ``name`` (case-insensitive), or None."""
        return self._attributes.get(name.lower())

    @cached_property
    def _attributes(self):
        return _by_name(self.attributes)

    def document(self, location):
        """Return the /Schemas resource for this schema."""
        return {
            "schemas": [SCHEMA_SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": [attribute.document() for attribute in self.attributes],
            "meta": {"resourceType": "Schema", "location": location},
        }


def _by_name(attributes):
    """Map lower-cased names to attributes, the first of a name winning."""
    found = {}
    for attribute in attributes:
        found.setdefault(attribute.name.lower(), attribute)
    return found


def _multi(name, description, types=("work", "home", "other"), extra=()):
    """Build one of the RFC's type/primary/value multi-valued attributes."""
    return Attribute(
        name,
        "complex",
        multi_valued=True,
        description=description,
        sub_attributes=(
            Attribute("value", description=f"The {name} value."),
            Attribute("display", description="A human-readable name."),
            Attribute("type", canonical_values=types, description="A label."),
            Attribute("primary", "boolean", description="The preferred value."),
            *extra,
        ),
    )


_META = Attribute(
    "meta",
    "complex",
    mutability="readOnly",
    description="Resource metadata.",
    sub_attributes=(
        Attribute("resourceType", case_exact=True, mutability="readOnly"),
        Attribute("created", "dateTime", mutability="readOnly"),
        Attribute("lastModified", "dateTime", mutability="readOnly"),
        Attribute("location", "reference", case_exact=True, mutability="readOnly"),
        Attribute("version", case_exact=True, mutability="readOnly"),
    ),
)

# Common attributes (RFC 7643 §3.1) that every resource carries.
ID = Attribute(
    "id",
    case_exact=True,
    mutability="readOnly",
    returned="always",
    uniqueness="server",
    description="Unique identifier assigned by the service provider.",
)
EXTERNAL_ID = Attribute(
    "externalId",
    case_exact=True,
    description="Identifier assigned by the provisioning client.",
)
COMMON = (ID, EXTERNAL_ID, _META)

USER = Schema(
    USER_SCHEMA,
    "User",
    "User Account",
    (
        Attribute(
            "userName",
            required=True,
            uniqueness="server",
            description="Unique identifier for the user, used to sign in.",
        ),
        Attribute(
            "name",
            "complex",
            description="The components of the user's name.",
            sub_attributes=(
                Attribute("formatted"),
                Attribute("familyName"),
                Attribute("givenName"),
                Attribute("middleName"),
                Attribute("honorificPrefix"),
                Attribute("honorificSuffix"),
            ),
        ),
        Attribute("displayName", description="The name shown to people."),
        Attribute("nickName", description="The casual name of the user."),
        Attribute("profileUrl", "reference", reference_types=("external",)),
        Attribute("title", description="The user's title."),
        Attribute("userType", description="The relationship to the organization."),
        Attribute("preferredLanguage", description="Preferred written language."),
        Attribute("locale", description="Default location for localisation."),
        Attribute("timezone", description="Time zone in IANA format."),
        Attribute("active", "boolean", description="Whether the user may sign in."),
        Attribute(
            "password",
            mutability="writeOnly",
            returned="never",
            description="Cleartext password; stored only as a hash.",
        ),
        _multi("emails", "Email addresses."),
        _multi(
            "phoneNumbers",
            "Phone numbers.",
            ("work", "home", "mobile", "fax", "pager", "other"),
        ),
        _multi(
            "ims",
            "Instant messaging addresses.",
            ("aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"),
        ),
        _multi("photos", "URLs of photos.", ("photo", "thumbnail")),
        Attribute(
            "addresses",
            "complex",
            multi_valued=True,
            description="Physical mailing addresses.",
            sub_attributes=(
                Attribute("formatted"),
                Attribute("streetAddress"),
                Attribute("locality"),
                Attribute("region"),
                Attribute("postalCode"),
                Attribute("country"),
                Attribute("type", canonical_values=("work", "home", "other")),
                Attribute("primary", "boolean"),
            ),
        ),
        Attribute(
            "groups",
            "complex",
            multi_valued=True,
            mutability="readOnly",
            description="Groups the user belongs to, computed from memberships.",
            sub_attributes=(
                Attribute("value", mutability="readOnly"),
                Attribute(
                    "$ref",
                    "reference",
                    mutability="readOnly",
                    reference_types=("Group",),
                ),
                Attribute("display", mutability="readOnly"),
                Attribute("type", mutability="readOnly", canonical_values=("direct",)),
            ),
        ),
        _multi("entitlements", "Entitlements.", ()),
        _multi("roles", "Roles.", ()),
        _multi("x509Certificates", "X.509 certificates (base64 DER).", ()),
    ),
)

ENTERPRISE_USER = Schema(
    ENTERPRISE_SCHEMA,
    "EnterpriseUser",
    "Enterprise User",
    (
        Attribute("employeeNumber"),
        Attribute("costCenter"),
        Attribute("organization"),
        Attribute("division"),
        Attribute("department"),
        Attribute(
            "manager",
            "complex",
            description="The user's manager.",
            sub_attributes=(
                Attribute("value", description="The id of the manager."),
                Attribute(
                    "$ref",
                    "reference",
                    reference_types=("User",),
                    description="The URI of the manager.",
                ),
                Attribute(
                    "displayName",
                    mutability="readOnly",
                    description="The manager's display name.",
                ),
            ),
        ),
    ),
)

GROUP = Schema(
    GROUP_SCHEMA,
    "Group",
    "Group",
    (
        Attribute(
            "displayName",
            required=True,
            uniqueness="server",
            description="Unique, human-readable group name.",
        ),
        Attribute(
            "members",
            "complex",
            multi_valued=True,
            description="Users in the group (nested groups are not supported).",
            sub_attributes=(
                Attribute("value", mutability="immutable"),
                Attribute(
                    "$ref",
                    "reference",
                    mutability="immutable",
                    reference_types=("User",),
                ),
                Attribute("display", mutability="readOnly"),
                Attribute("type", mutability="immutable", canonical_values=("User",)),
            ),
        ),
    ),
)


def custom_schema(urn, definitions):
    """Build the custom-attribute extension from (name, type) pairs."""
    return Schema(
        urn,
        "CustomUser",
        "Custom user attributes defined by the administrator",
        tuple(
            Attribute(name, type, description=f"Custom attribute {name}.")
            for name, type in definitions
        ),
    )


RESOLVED_CACHE = 4096


@dataclass(frozen=True)
class ResourceType:
    """A resource type: its core schema and extensions (RFC 7643 §6)."""

    name: str
    endpoint: str
    core: Schema
    extensions: tuple = ()
    # Paths resolved so far: a Bulk load resolves the same few for every user.
    _resolved: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def schemas(self):
        return (self.core, *self.extensions)

    @cached_property
    def extension_ids(self):
        """The extensions' schema URNs, as sent."""
        return frozenset(schema.id for schema in self.extensions)

    def extension(self, urn):
        """Return the extension schema for ``urn`` (case-insensitive), or None."""
        lowered = urn.lower()
        for schema in self.extensions:
            if schema.id.lower() == lowered:
                return schema
        return None

    def split_urn(self, path):
        """Split ``urn:...:User:attr.sub`` into (schema, "attr.sub"), or (None, path)."""
        # Older Entra and Microsoft's samples join the URN with a dot,
        # urn:...:User.manager. No schema URN of ours ends where another
        # one's attribute would begin, so the dot can only mean this.
        lowered = path.lower()
        for schema in self.schemas:
            prefix = schema.id.lower()
            if lowered == prefix:
                return schema, ""
            if lowered.startswith(prefix) and lowered[len(prefix)] in ":.":
                return schema, path[len(prefix) + 1 :]
        return None, path

    def with_colon(self, path):
        """Return ``path`` with a schema URN joined by a dot written with a colon."""
        schema, rest = self.split_urn(path)
        if schema is None or not rest:
            return path
        return f"{path[: len(schema.id)]}:{rest}"

    def resolve(self, path):
        """Resolve ``attr[.sub]`` or ``urn:attr[.sub]`` to (schema, attr, sub), or None."""
        try:
            return self._resolved[path]
        except KeyError:
            pass
        resolved = self._resolve(path)
        # Bounded: a client chooses the paths, and may send any number.
        if len(self._resolved) < RESOLVED_CACHE:
            self._resolved[path] = resolved
        return resolved

    def _resolve(self, path):
        # Names are matched case-insensitively (RFC 7643 §2.1).
        schema, rest = self.split_urn(path)
        if schema is not None and not rest:
            return None
        name, _, sub_name = rest.partition(".")
        if schema is None:
            common = _common(name)
            if common is not None:
                return _with_sub(None, common, sub_name)
            schema = self.core
        attribute = schema.attribute(name)
        if attribute is None:
            return None
        return _with_sub(schema, attribute, sub_name)

    def document(self, location):
        """Return the /ResourceTypes resource."""
        return {
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": f"{self.name} resources",
            "schema": self.core.id,
            "schemaExtensions": [
                {"schema": schema.id, "required": False} for schema in self.extensions
            ],
            "meta": {"resourceType": "ResourceType", "location": location},
        }


def _common(name):
    lowered = name.lower()
    for attribute in COMMON:
        if attribute.name.lower() == lowered:
            return attribute
    return None


def _with_sub(schema, attribute, sub_name):
    if not sub_name:
        return schema, attribute, None
    if not attribute.complex:
        return None
    sub = attribute.sub(sub_name)
    if sub is None:
        return None
    return schema, attribute, sub


def user_type(custom_urn=DEFAULT_CUSTOM_SCHEMA, custom_definitions=()):
    """Return the User resource type, with the custom extension when any are defined."""
    extensions = [ENTERPRISE_USER]
    if custom_definitions:
        extensions.append(custom_schema(custom_urn, custom_definitions))
    return ResourceType("User", "/Users", USER, tuple(extensions))


GROUP_TYPE = ResourceType("Group", "/Groups", GROUP)
