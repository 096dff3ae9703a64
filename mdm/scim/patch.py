"""SCIM PATCH (RFC 7644 §3.5.2): validate PatchOp bodies and apply them to dicts."""

from dataclasses import dataclass
from dataclasses import field

from ..activity import note_ignored
from . import filters
from . import multivalued
from . import parse
from .errors import ScimError

OPS = ("add", "replace", "remove")
# IdPs send tens of operations (the Entra validator's largest has 38); a cap
# keeps one request from holding the write lock for seconds.
MAX_OPERATIONS = 500
# Computed by the server; Entra sometimes echoes them in a no-path value.
SERVER_KEYS = {"id", "meta", "schemas", "groups"}
# An element with only these says nothing, e.g. an email whose value was cleared.
LABELS = {"type", "primary", "display"}


@dataclass(frozen=True)
class Operation:
    """One PATCH operation: ``op`` lower-cased, ``path`` None when absent or empty."""

    op: str
    path: str | None
    value: object = None
    has_value: bool = False


@dataclass
class Result:
    """What apply() changed outside the resource dict."""

    # Group membership changes in operation order: ("add", ids), ("remove",
    # ids), ("remove_all", None), ("replace", ids) or ("remove_where", node).
    members: list = field(default_factory=list)
    # Notes about attributes this resource type does not have.
    ignored: list = field(default_factory=list)


@dataclass(frozen=True)
class _Target:
    """A resolved path; ``attribute`` is None when the path names a whole schema."""

    schema: object
    attribute: object = None
    sub: object = None
    filter: object = None


def operations(body):
    """Validate a PatchOp body and return its operations in order."""
    if not isinstance(body, dict):
        raise ScimError.invalid_syntax("The PATCH body must be a JSON object.")
    items = parse.operations_array(body, "The PATCH body needs an Operations array.")
    if len(items) > MAX_OPERATIONS:
        raise ScimError.invalid_value(
            f"A PATCH may carry at most {MAX_OPERATIONS} operations; "
            f"this one has {len(items)}. Split it into several requests."
        )
    # An empty array is a no-op: the Entra validator fails a server that
    # answers RFC 7644's 400 (docs/entra.md §3.6).
    return [_operation(item) for item in items]


def _operation(item):
    if not isinstance(item, dict):
        raise ScimError.invalid_syntax("Each operation must be a JSON object.")
    op = parse.get_key(item, "op")
    # Entra writes "Add", "Replace" and "Remove" (docs/entra.md §3.1).
    if not isinstance(op, str) or op.lower() not in OPS:
        raise ScimError.invalid_syntax(
            f'Unsupported op {op!r}: use "add", "replace" or "remove".'
        )
    path = parse.get_key(item, "path")
    if path is not None and not isinstance(path, str):
        raise ScimError.invalid_path("path must be a string.")
    key = next((k for k in item if k.lower() == "value"), None)
    return Operation(
        op.lower(),
        (path or "").strip() or None,
        item[key] if key is not None else None,
        key is not None,
    )


def apply(resource, ops, resource_type):
    """Apply ``ops`` in order to ``resource`` in place and return a Result."""
    patch = _Patch(resource, resource_type)
    for operation in ops:
        patch.run(operation)
    _tidy(resource)
    return patch.result


class _Patch:
    """The resource, its type and the Result of one apply() call."""

    def __init__(self, resource, resource_type):
        self.resource = resource
        self.type = resource_type
        self.result = Result()
        self.noted = set()

    def run(self, operation):
        """Apply one operation."""
        op, value = operation.op, operation.value
        if op != "remove" and not operation.has_value:
            raise ScimError.invalid_value(f"{op} needs a value.")
        if operation.path is None:
            if op == "remove":
                raise ScimError.no_target("remove needs a path.")
            if not isinstance(value, dict):
                raise ScimError.invalid_value(
                    f"{op} without a path needs an object value."
                )
            self.merge(op, self.type.core, value)
            return
        target = self.target(operation.path, strict=True)
        if target is None:
            return
        if _read_only(target):
            raise ScimError.mutability(f"{operation.path} is read-only.")
        self.write(op, target, value)

    def merge(self, op, schema, value):
        """Apply each key of a no-path value as the path of its own operation."""
        for key, item in value.items():
            if schema == self.type.core:
                if key.lower() in SERVER_KEYS:
                    continue
                text = key
            else:
                text = f"{schema.id}:{key}"
            target = self.target(text, strict=False)
            # Read-only attributes in a value are echoes of a GET: skip them quietly.
            if target is not None and not _read_only(target):
                self.write(op, target, item)

    def target(self, text, strict):
        """Resolve ``text`` to a _Target; note it and return None if unknown."""
        text = self.type.with_colon(text)
        schema, rest = self.type.split_urn(text)
        if schema is not None and not rest:
            return _Target(schema)
        try:
            parsed = filters.parse_path(text)
        except ScimError as error:
            if strict:
                raise ScimError.invalid_path(
                    error.detail or f"Invalid path {text!r}."
                ) from None
            return self.ignore(text)
        path = parsed.path
        resolved = self.resolve(f"{path.urn}:{path.attr}" if path.urn else path.attr)
        if resolved is None:
            return self.ignore(text)
        schema, attribute, _ = resolved
        sub = None
        sub_name = parsed.sub or path.sub
        if sub_name:
            sub = attribute.sub(sub_name)
            if sub is None:
                return self.ignore(text)
        if parsed.filter is not None and not attribute.multi_valued:
            raise ScimError.invalid_path(
                f"{attribute.name} is single-valued and takes no filter."
            )
        return _Target(schema, attribute, sub, parsed.filter)

    def resolve(self, name):
        """Resolve an attribute name, also finding extension attributes by bare name."""
        resolved = self.type.resolve(name)
        if resolved is None and ":" not in name:
            # Entra's legacy manager path has no URN (docs/entra.md §3.4).
            for extension in self.type.extensions:
                attribute = extension.attribute(name)
                if attribute is not None:
                    return extension, attribute, None
        return resolved

    def ignore(self, text):
        """Note an attribute this resource type does not have, and return None."""
        # Failing the request would also drop an "active" change sent with it
        # (docs/entra.md §3.5), so unknown attributes are only noted.
        note = f"Ignored {text!r}: not an attribute of {self.type.name}."
        note_ignored(self.type.name, text)
        if note not in self.noted:
            self.noted.add(note)
            self.result.ignored.append(note)
        return None

    def holder(self, schema, create):
        """Return the dict that holds ``schema``'s attributes."""
        if schema is None or schema == self.type.core:
            return self.resource
        if create:
            return self.resource.setdefault(schema.id, {})
        found = self.resource.get(schema.id)
        return found if isinstance(found, dict) else {}

    def write(self, op, target, value):
        """Apply ``op`` with ``value`` to a resolved target."""
        attribute = target.attribute
        if attribute is None:
            self.write_schema(op, target.schema, value)
        elif self.type.name == "Group" and attribute.name == "members":
            self.members(op, target, value)
        elif op == "remove":
            self.remove(target, value)
        elif attribute.multi_valued:
            self.set_items(op, target, value)
        else:
            self.set_single(target, value)

    def write_schema(self, op, schema, value):
        """Apply an operation whose path is a bare schema URN."""
        if op == "remove" or _empty(value):
            if schema == self.type.core:
                raise ScimError.invalid_path("The core schema cannot be removed.")
            self.resource.pop(schema.id, None)
            return
        if not isinstance(value, dict):
            raise ScimError.invalid_value(
                f"The value for {schema.id} must be an object."
            )
        self.merge(op, schema, value)

    def set_single(self, target, value):
        """Add or replace a single-valued attribute or one of its sub-attributes."""
        attribute, sub = target.attribute, target.sub
        holder = self.holder(target.schema, create=True)
        if not attribute.complex:
            _assign(holder, attribute.name, _scalar(attribute, value))
            return
        if sub is None or (_keyed(attribute) and sub.name == "value"):
            self.set_complex(holder, attribute, value)
            return
        current = holder.get(attribute.name)
        current = current if isinstance(current, dict) else {}
        _assign(current, sub.name, _scalar(sub, value, attribute))
        _assign(holder, attribute.name, current)

    def set_complex(self, holder, attribute, value):
        """Write a complex single-valued attribute: merge it, or replace a keyed one."""
        if _keyed(attribute):
            # Entra sends the manager as a bare id, {"value": id} or a legacy
            # one-item list, and removes it with "" or {"value": ""} (docs/entra.md
            # §3.4). The id is the whole value: a new one makes $ref stale.
            if isinstance(value, list):
                value = value[0] if value else None
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                value = {"value": value}
            item = self.element(attribute, value) if not _empty(value) else {}
            _assign(holder, attribute.name, item if "value" in item else None)
            return
        if _empty(value):
            holder.pop(attribute.name, None)
            return
        # Merge even for replace: Entra and Okta send partial objects and
        # expect the sub-attributes they leave out to survive.
        current = holder.get(attribute.name)
        current = current if isinstance(current, dict) else {}
        for key, sub_value in _object(value, attribute.name).items():
            sub = attribute.sub(key)
            if sub is None:
                self.ignore(f"{attribute.name}.{key}")
            elif sub.mutability != "readOnly":
                _assign(current, sub.name, _scalar(sub, sub_value, attribute))
        _assign(holder, attribute.name, current)

    def set_items(self, op, target, value):
        """Add or replace elements of a multi-valued attribute or their parts."""
        attribute, sub = target.attribute, target.sub
        holder = self.holder(target.schema, create=True)
        items = holder.get(attribute.name)
        items = items if isinstance(items, list) else []
        if target.filter is None and sub is None:
            if op == "add" and value == []:
                return
            if _empty(value):
                holder.pop(attribute.name, None)
                return
            if op == "replace":
                items = []
            written = []
            listed = _listed(value)
            elements = multivalued.Elements(items, len(listed))
            for item in listed:
                element = self.element(attribute, item)
                if not element:
                    continue
                # RFC 7644 §3.5.2.1: adding a value already there changes nothing.
                found = elements.find(element)
                written.append(found if found is not None else elements.add(element))
            _assign(holder, attribute.name, items)
            multivalued.one_primary(items, written)
            return
        matched = self.matching(target, items)
        if sub is not None:
            if _empty(value):
                for item in matched:
                    item.pop(sub.name, None)
                return
            change = {sub.name: _scalar(sub, value, attribute)}
        elif _empty(value):
            items[:] = multivalued.without(items, matched)
            return
        else:
            change = self.element(attribute, _object(value, attribute.name))
        if not matched:
            # Entra adds to emails[type eq "work"].value on a user without a
            # work email and expects the element to be created; later ops on
            # the same filter then match it (docs/entra.md §3.3).
            matched = [self.seed(target)]
            items.append(matched[0])
            holder[attribute.name] = items
        for item in matched:
            item.update(change)
        multivalued.one_primary(items, matched)

    def matching(self, target, items):
        """Return the elements the target's filter selects (all, without a filter)."""
        if target.filter is None:
            return list(items)
        try:
            return [
                item
                for item in items
                if isinstance(item, dict)
                and filters.matches(target.filter, item, target.attribute)
            ]
        except ScimError as error:
            # A filter naming no sub-attribute of the element is a bad path here.
            raise ScimError.invalid_path(error.detail) from None

    def seed(self, target):
        """Build a new element from the target filter's ``eq`` comparisons."""
        attribute = target.attribute
        if target.filter is None:
            return {}
        pairs = _equalities(target.filter)
        if pairs is None:
            raise ScimError.no_target(
                f"No {attribute.name} element matches the filter, and only"
                ' filters like type eq "work" can create one.'
            )
        element = {}
        for name, literal in pairs:
            sub = attribute.sub(name)
            if sub is None:
                raise ScimError.invalid_path(
                    f"{attribute.name} has no sub-attribute {name!r}."
                )
            element[sub.name] = _literal(sub, literal)
        return element

    def element(self, attribute, item):
        """Return an element of a complex attribute under canonical names."""
        if isinstance(item, str) and (
            attribute.multi_valued or attribute.sub("value") is not None
        ):
            item = parse.bare_element(attribute, item)
        element = {}
        for key, value in _object(item, attribute.name).items():
            sub = attribute.sub(key)
            if sub is None:
                self.ignore(f"{attribute.name}.{key}")
            elif sub.mutability != "readOnly" and not _empty(value):
                element[sub.name] = _scalar(sub, value, attribute)
        return element

    def remove(self, target, value):
        """Remove an attribute, a sub-attribute, or the selected elements."""
        attribute, sub = target.attribute, target.sub
        holder = self.holder(target.schema, create=False)
        current = holder.get(attribute.name)
        if not attribute.multi_valued:
            if sub is None or (_keyed(attribute) and sub.name == "value"):
                holder.pop(attribute.name, None)
            elif isinstance(current, dict):
                current.pop(sub.name, None)
            return
        if not isinstance(current, list):
            return
        if target.filter is None and sub is None:
            if value is None:
                holder.pop(attribute.name, None)
                return
            # Entra removes with a value array on the plain path: drop only
            # the listed elements, never all of them (docs/entra.md §4.2).
            listed = [self.element(attribute, item) for item in _listed(value)]
            named = multivalued.Named(attribute, listed)
            current[:] = [item for item in current if not named.covers(item)]
            return
        matched = self.matching(target, current)
        if sub is None:
            current[:] = multivalued.without(current, matched)
            return
        for item in matched:
            item.pop(sub.name, None)

    def members(self, op, target, value):
        """Record a group membership change; members never enter the resource dict."""
        # A group may have 100k members, so the caller applies these as SQL.
        if target.sub is not None or (target.filter is not None and op != "remove"):
            raise ScimError.invalid_path(
                "members takes no sub-attribute, and a filter only when removing."
            )
        changes = self.result.members
        if op == "remove":
            if target.filter is not None:
                ids = _value_ids(target.filter)
                changes.append(
                    ("remove", ids) if ids else ("remove_where", target.filter)
                )
            elif value is None:
                changes.append(("remove_all", None))
            else:
                # Entra removes members with a value array (docs/entra.md §4.2).
                ids = parse.member_ids(value)
                if ids:
                    changes.append(("remove", ids))
        elif op == "add":
            ids = [] if _empty(value) else parse.member_ids(value)
            if ids:
                changes.append(("add", ids))
        else:
            changes.append(
                ("replace", [] if _empty(value) else parse.member_ids(value))
            )


#
# Filter shapes
#


def _equalities(node):
    """Return [(sub, literal)] if ``node`` is eq terms joined by and, else None."""
    if isinstance(node, filters.And):
        left, right = _equalities(node.left), _equalities(node.right)
        return None if left is None or right is None else left + right
    if _plain_eq(node) and node.value is not None:
        return [(node.path.attr, node.value)]
    return None


def _value_ids(node):
    """Return the ids if ``node`` is value eq "id" terms joined by or, else None."""
    if isinstance(node, filters.Or):
        left, right = _value_ids(node.left), _value_ids(node.right)
        if left is None or right is None:
            return None
        return list(dict.fromkeys(left + right))
    if _plain_eq(node) and node.path.attr.lower() == "value":
        if isinstance(node.value, str) and node.value:
            return [node.value]
    return None


def _plain_eq(node):
    """Return whether ``node`` is ``sub eq literal`` on an element sub-attribute."""
    if not isinstance(node, filters.Compare) or node.op != "eq":
        return False
    return node.path.urn is None and node.path.sub is None


#
# Values
#


def _empty(value):
    """Return whether ``value`` clears an attribute (Entra sends "" and null)."""
    return value is None or (isinstance(value, (str, list, dict)) and not value)


def _assign(holder, name, value):
    if _empty(value):
        holder.pop(name, None)
    else:
        holder[name] = value


def _object(value, name):
    if not isinstance(value, dict):
        raise ScimError.invalid_value(f"The value for {name} must be an object.")
    return value


def _scalar(attribute, value, parent=None):
    """Return a simple value unchanged; type coercion is left to parse."""
    if isinstance(value, (dict, list)):
        name = f"{parent.name}.{attribute.name}" if parent else attribute.name
        raise ScimError.invalid_value(
            f"{name} takes a single value, not an object or array."
        )
    return value


def _literal(sub, literal):
    """Return a filter literal as a value; Entra writes roles[primary eq "True"]."""
    if (
        sub.type == "boolean"
        and isinstance(literal, str)
        and literal.lower() in ("true", "false")
    ):
        return literal.lower() == "true"
    return literal


def _listed(value):
    """Return a multi-valued value as a list; a lone element is allowed."""
    return value if isinstance(value, list) else [value]


def _keyed(attribute):
    """Return whether a complex single-valued attribute is its value (manager)."""
    return (
        attribute.complex
        and not attribute.multi_valued
        and attribute.sub("value") is not None
    )


def _read_only(target):
    attribute, sub = target.attribute, target.sub
    if attribute is None:
        return False
    if attribute.mutability == "readOnly":
        return True
    return sub is not None and sub.mutability == "readOnly"


def _tidy(holder):
    """Drop emptied values, so "" and null read back as absent (RFC 7643 §2.5)."""
    for key in list(holder):
        value = holder[key]
        if isinstance(value, dict):
            _tidy(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _tidy(item)
            value[:] = [item for item in value if not _hollow(item)]
        if _empty(value):
            del holder[key]


def _hollow(item):
    return isinstance(item, dict) and set(item) <= LABELS
