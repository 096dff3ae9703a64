"""A parsed filter compiled to peewee expressions over User, Group and Membership."""

from dataclasses import dataclass

from peewee import SQL
from peewee import Column
from peewee import Field
from peewee import NodeList
from peewee import fn

from ...db import bindable
from ...db import element_member
from ...db import element_value
from ...db import exact
from ...db import false
from ...db import is_not_true
from ...db import json_elements
from ...db import json_flag
from ...db import json_get
from ...db import json_get_indexed
from ...db import json_type
from ...db import like
from ...db import nocase
from ...db import postgres
from ...db import substring
from ...db import true
from ...models import ATTRIBUTE_COLUMNS
from ...models import GROUPING_COLUMNS
from ...models import MIRRORED
from ...models import Group
from ...models import Membership
from ...models import User
from ...models import lowered
from ...models import user_search_fields
from ..errors import ScimError
from .evaluate import ORDER
from .evaluate import as_bool
from .evaluate import as_datetime
from .evaluate import as_number
from .evaluate import as_text
from .evaluate import check_operator
from .evaluate import compare
from .evaluate import is_present
from .evaluate import null_test
from .grammar import MAX_VALUE_PATHS
from .grammar import SUBSTRING_OPS
from .grammar import And
from .grammar import Compare
from .grammar import Not
from .grammar import Or
from .grammar import Path
from .grammar import Present
from .grammar import ValuePath
from .grammar import parse_attribute_path

# A condition may be NULL when an attribute is missing. NULL counts as false,
# which is right under and/or; ``not`` and ``ne`` compile to "IS NOT TRUE" so
# that "not (title eq x)" and "title ne x" match a user without a title.


@dataclass(frozen=True)
class _Operand:
    """A single SQL value a comparison applies to, with its SCIM typing rules."""

    expr: object
    type: str = "string"
    case_exact: bool = False
    nocase: bool = False
    json: bool = False
    constant: object = None
    # An attribute column's lowercased copy, on PostgreSQL (models.lowered).
    lowered: object = None


def to_expression(node, resource_type):
    """Compile a filter AST into a peewee where-expression for ``resource_type``."""
    return _compile(node, _ResourceScope(resource_type))


def member_expression(node):
    """Compile a ``members[...]`` inner filter into a where-expression over User."""
    return _compile(node, _RelationScope(User, "User"))


def sort_expression(path_text, resource_type):
    """Return the peewee expression to order ``resource_type`` by ``sortBy``."""
    path = parse_attribute_path(path_text, ScimError.invalid_value)
    scope = _ResourceScope(resource_type)
    try:
        return scope.sort_key(path)
    except ScimError as exc:
        if exc.scim_type == "invalidValue":
            raise
        raise ScimError.invalid_value(f"Cannot sort by {path_text!r}.") from None


_TIMES = ("created", "lastModified")


def bounds_a_time(node, resource_type):
    """Whether the filter, or a part of it joined by ``and``, bounds meta.created or lastModified."""
    scope = _ResourceScope(resource_type)
    pending = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, And):
            pending += (current.left, current.right)
        elif isinstance(current, Compare) and current.op in ("gt", "ge", "lt", "le"):
            _, attribute, sub = scope.resolve(current.path)
            if attribute.name == "meta" and sub and sub.name in _TIMES:
                return True
    return False


def selects_a_value(node, resource_type):
    """Whether the filter, or a part of it joined by ``and``, is an attribute column ``eq`` a value."""
    scope = _ResourceScope(resource_type)
    if not scope.has_data:
        return False
    pending = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, And):
            pending += (current.left, current.right)
        elif isinstance(current, Compare) and current.op == "eq":
            if current.value is None:
                continue
            found = _single_valued(scope, current.path)
            if found is None or found[0] is None:
                continue
            if scope.attribute_column(*found) is not None:
                return True
    return False


def _single_valued(scope, path):
    """Return the (schema, attribute, sub) a comparison on one value reads, or None."""
    schema, attribute, sub = scope.resolve(path)
    if attribute.multi_valued:
        return None
    if attribute.complex and sub is None:
        # Entra's legacy "manager eq id" compares the value (see leaf).
        sub = attribute.sub("value")
    return schema, attribute, sub


def counted_value(node, resource_type):
    """Return (column, text) if the filter is a grouping attribute ``eq`` a text, compared by its copy."""
    # Exactly the comparisons leaf compiles to "copy = lower(text)" (PostgreSQL)
    # or a NOCASE "column = text" (SQLite) on a column whose values' users are
    # kept counted (db.kept_value_counts).
    if not isinstance(node, Compare) or node.op != "eq":
        return None
    if not isinstance(node.value, str) or "\x00" in node.value:
        return None
    scope = _ResourceScope(resource_type)
    if not scope.has_data:
        return None
    found = _single_valued(scope, node.path)
    if found is None or (found[1].complex and found[2] is None):
        return None
    operand = scope.scalar(*found)
    if operand.case_exact or operand.type != "string":
        return None
    # Compared on the lowercased copy (PostgreSQL) or the NOCASE column (SQLite).
    if not (operand.lowered is not None if postgres() else operand.nocase):
        return None
    column = operand.expr.column_name
    return (column, node.value) if column in GROUPING_COLUMNS else None


def _compile(node, scope):
    if isinstance(node, And | Or):
        return _compile_chain(node, scope)
    if isinstance(node, Not):
        return _negate(_compile(node.node, scope))
    if isinstance(node, Present):
        return scope.leaf(node.path, "pr", None)
    if isinstance(node, Compare):
        if node.value is None:
            # eq null is "not present" and ne null is "present".
            if node.op not in ("eq", "ne"):
                null_test(node.op, True)
            present = scope.leaf(node.path, "pr", None)
            return _negate(present) if node.op == "eq" else present
        return scope.leaf(node.path, node.op, node.value)
    if isinstance(node, ValuePath):
        return scope.value_path(node.path, node.filter)
    raise ScimError.invalid_filter("Unsupported filter expression.")


def _compile_chain(node, scope):
    # SQLite's parser overflows at a few dozen nested parentheses, so a chain
    # of one operator renders flat, "(a AND b AND c)", not as nested pairs.
    kind = type(node)
    parts = []
    pending = [node]
    while pending:
        current = pending.pop()
        if type(current) is kind:
            pending.extend((current.right, current.left))
        else:
            parts.append(_compile(current, scope))
    glue = " AND " if kind is And else " OR "
    return NodeList(parts, glue=glue, parens=True)


def _negate(expr):
    # Conditions are true, false or NULL; IS NOT TRUE turns unknown into a match.
    return is_not_true(expr)


def _json_keys(*keys):
    # JSON paths quote their labels; a label with a quote cannot be named.
    for key in keys:
        if '"' in key:
            raise ScimError.invalid_filter(f"{key!r} cannot be filtered.")
    return keys


def _condition(operand, op, value):
    """Return the SQL condition ``operand op value`` (op may be ``pr``)."""
    if operand.expr is None:
        if op == "pr":
            return true() if is_present(operand.constant) else false()
        passed = compare(
            operand.constant, op, value, operand.type, operand.case_exact, True
        )
        return true() if passed else false()
    x = operand.expr
    if op == "pr":
        if operand.type in ("string", "reference", "binary"):
            return x != ""
        return x.is_null(False)
    check_operator(op, operand.type)
    if op == "ne":
        return _negate(_condition(operand, "eq", value))
    if operand.type == "boolean":
        wanted = as_bool(value)
        if wanted is None:
            raise ScimError.invalid_filter(f"{value!r} is not a boolean.")
        if operand.json:
            # JSON true reads back as 1; tolerate "true" text left by lax clients.
            return fn.lower(x).in_(["1", "true"] if wanted else ["0", "false"])
        # "NOT active" as the console writes it, matching the partial index
        # of disabled users (models.py).
        return x == wanted if wanted else ~x
    if operand.type in ("integer", "decimal"):
        wanted = as_number(value)
        if wanted is None:
            raise ScimError.invalid_filter(f"{value!r} is not a number.")
        if isinstance(wanted, int) and not -(2**63) <= wanted < 2**63:
            # SQLite binds integers as 64-bit; a larger one compares as a REAL.
            try:
                wanted = float(wanted)
            except OverflowError:
                raise ScimError.invalid_filter("The number is out of range.") from None
        return ORDER[op](x, wanted)
    if operand.type == "dateTime":
        wanted = as_datetime(value)
        if isinstance(x, Field):
            # The field's converter renders the datetime exactly as stored.
            return ORDER[op](x, wanted)
        return ORDER[op](x, wanted.isoformat())
    return _text_condition(operand, op, as_text(value))


def _text_condition(operand, op, text):
    x = operand.expr
    if "\x00" in text:
        # NUL is refused on write, so no stored value contains it; PostgreSQL
        # cannot even take it as a parameter.
        if op in ("eq", "co", "sw", "ew"):
            return false()
        text = bindable(text)
    if op in SUBSTRING_OPS:
        if operand.case_exact:
            if op != "co" and not text:
                return x.is_null(False)
            exact_match = substring(x, op, text)
        else:
            # The pattern match ignores ASCII case, like NOCASE.
            exact_match = like(x, text, {"co": "%{}%", "sw": "{}%", "ew": "%{}"}[op])
        if any(x is field for field in user_search_fields()):
            return _searched(text, exact_match)
        return exact_match
    if operand.lowered is not None and not operand.case_exact:
        # Compared as citext compares, on the copy its indexes hold.
        return ORDER[op](operand.lowered, fn.lower(text))
    if operand.case_exact:
        side = exact(x) if operand.nocase else x
    else:
        # A case-insensitive column compares directly so its index stays usable.
        side = x if operand.nocase else nocase(x)
    return ORDER[op](side, text)


def _searched(text, condition):
    """Return ``condition`` on a user's text narrowed first by the substring index."""
    # The index finds the users holding ``text`` anywhere, ignoring case, and
    # perhaps a few more; ``condition`` then decides exactly, so case-exact
    # attributes and sw/ew keep their meaning.
    candidates = User.search_candidates(text)
    if candidates is None:
        return condition
    return NodeList((candidates, condition), glue=" AND ", parens=True)


def _is_emails(scope, schema, attribute):
    """Return True for a user's emails, whose values the index covers."""
    return (
        scope.model is User
        and attribute.name == "emails"
        and (schema is None or schema is scope.resource_type.core)
    )


def _indexed_text(op, value):
    """Return the text a value compared by ``op`` must contain, for the index, or None."""
    # An equal value contains itself: "emails.value eq x" is narrowed by the
    # substring index like "co", instead of reading every user's emails.
    if op in SUBSTRING_OPS and value is not None:
        return as_text(value)
    if op == "eq" and isinstance(value, str):
        return value
    return None


def _required_substring(inner):
    """Return the longest text on ``value`` that ``inner`` requires an element to hold."""
    # Only conditions joined by "and" are each required of a matching element.
    found = []
    pending = [inner]
    while pending:
        node = pending.pop()
        if isinstance(node, And):
            pending.extend((node.left, node.right))
        elif (
            isinstance(node, Compare)
            and node.path.urn is None
            and node.path.sub is None
            and node.path.attr.lower() == "value"
        ):
            text = _indexed_text(node.op, node.value)
            if text is not None:
                found.append(text)
    return max(found, key=len, default=None)


def _column(field, attribute, copy=None):
    case_insensitive = getattr(field, "nocase", False)
    return _Operand(
        field, attribute.type, attribute.case_exact, case_insensitive, lowered=copy
    )


class _ResourceScope:
    """Resolves top-level paths of a User or Group resource to SQL."""

    def __init__(self, resource_type):
        self.resource_type = resource_type
        self.model = User if resource_type.name == "User" else Group
        self.has_data = self.model is User
        self.counter = 0
        self.value_paths = 0

    def next_alias(self, prefix):
        self.counter += 1
        return f"{prefix}{self.counter}"

    def resolve(self, path):
        """Return (schema, attribute, sub) for ``path`` or raise invalidFilter."""
        resolved = self.resource_type.resolve(str(path))
        if resolved is None and path.urn is not None:
            # Common attributes (id, externalId, meta) may carry the core URN.
            if path.urn.lower() == self.resource_type.core.id.lower():
                resolved = self.resource_type.resolve(
                    str(Path(None, path.attr, path.sub))
                )
        if resolved is None and path.urn is None:
            # Entra's legacy pre-check sends "manager eq ..." without its URN;
            # an unqualified name falls back to the first extension defining it.
            for extension in self.resource_type.extensions:
                qualified = Path(extension.id, path.attr, path.sub)
                resolved = self.resource_type.resolve(str(qualified))
                if resolved is not None:
                    break
        if resolved is None:
            raise ScimError.invalid_filter(f"Unknown attribute {str(path)!r}.")
        schema, attribute, sub = resolved
        if attribute.returned == "never":
            raise ScimError.invalid_filter(f"{attribute.name} cannot be filtered.")
        if schema is None and attribute.name == "meta" and sub is None:
            raise ScimError.invalid_filter(
                "Name a meta sub-attribute, e.g. meta.created."
            )
        return schema, attribute, sub

    def json_keys(self, schema, attribute):
        if not self.has_data:
            raise ScimError.invalid_filter(f"{attribute.name} cannot be filtered.")
        if schema is not None and schema is not self.resource_type.core:
            return (schema.id, attribute.name)
        return (attribute.name,)

    def scalar(self, schema, attribute, sub):
        """Return the operand for a single-valued attribute or sub-attribute."""
        target = sub or attribute
        if schema is None or schema is self.resource_type.core:
            column = self.column(attribute.name, sub.name if sub else None)
            if column is not None:
                return (
                    column if isinstance(column, _Operand) else _column(column, target)
                )
        column = self.attribute_column(schema, attribute, sub)
        if column is not None:
            if not postgres():
                return _column(column, target)
            copy = Column(self.model, lowered(column.column_name))
            return _column(column, target, copy)
        keys = self.json_keys(schema, attribute) + ((sub.name,) if sub else ())
        expr = json_get_indexed(self.model.data, _json_keys(*keys), target.type)
        return _Operand(expr, target.type, target.case_exact, json=True)

    def attribute_column(self, schema, attribute, sub):
        """Return the column an attribute is mirrored in (schemas 8 and 14), or None."""
        if not self.has_data:
            return None
        keys = self.json_keys(schema, attribute) + ((sub.name,) if sub else ())
        column = ATTRIBUTE_COLUMNS.get(keys)
        return None if column is None else getattr(self.model, column)

    def column(self, name, sub):
        model = self.model
        if (name, sub) == ("meta", "resourceType"):
            return _Operand(None, "string", True, constant=self.resource_type.name)
        columns = {
            ("id", None): model.scim_id,
            ("externalId", None): model.external_id,
            ("displayName", None): model.display_name,
            ("meta", "created"): model.created,
            ("meta", "lastModified"): model.last_modified,
        }
        if self.has_data:
            columns.update(
                {
                    ("userName", None): model.user_name,
                    ("name", "givenName"): model.given_name,
                    ("name", "familyName"): model.family_name,
                    ("active", None): model.active,
                    ("title", None): model.title,
                }
            )
        if name == "meta" and (name, sub) not in columns:
            raise ScimError.invalid_filter(f"meta.{sub or ''} cannot be filtered.")
        return columns.get((name, sub))

    def mirrored_parts(self, keys):
        """Return the columns that hold sub-attributes of the complex attribute at ``keys``."""
        if not self.has_data:
            return ()
        return [
            getattr(self.model, column)
            for parents, _, column in MIRRORED
            if parents == keys
        ]

    def relation(self, attribute):
        """Return the Membership-backed scope for groups/members, or None."""
        if attribute.name == "groups" and self.model is User:
            return _LinkScope(self, Group, "user", "group", "direct")
        if attribute.name == "members" and self.model is Group:
            return _LinkScope(self, User, "group", "user", "User")
        return None

    def leaf(self, path, op, value):
        schema, attribute, sub = self.resolve(path)
        if attribute.multi_valued:
            # "emails.type eq x" is "emails[type eq x]": any element matching
            # (RFC 7644 §3.4.2.2), so "ne" needs one element that differs.
            if sub is None and op == "pr":
                return self.any_element(schema, attribute, None)
            if not attribute.complex:
                name = "value"
            else:
                name = (sub or self.implied_value(attribute)).name
            element = Path(None, name)
            inner = Present(element) if op == "pr" else Compare(element, op, value)
            found = self.any_element(schema, attribute, inner)
            text = _indexed_text(op, value)
            if text is not None and name.lower() == "value":
                if _is_emails(self, schema, attribute):
                    found = _searched(text, found)
            return found
        if attribute.complex and sub is None:
            if op == "pr" and attribute.sub("value") is None:
                keys = _json_keys(*self.json_keys(schema, attribute))
                expr = json_get(self.model.data, keys)
                found = (json_type(self.model.data, keys) == "object") & (expr != "{}")
                # name's parts that columns hold are not in the document.
                for column in self.mirrored_parts(keys):
                    found = found | column.is_null(False)
                return found
            # Entra's legacy manager eq "id" means the value sub-attribute.
            sub = self.implied_value(attribute)
        return _condition(self.scalar(schema, attribute, sub), op, value)

    def implied_value(self, attribute):
        sub = attribute.sub("value")
        if sub is None:
            raise ScimError.invalid_filter(
                f"{attribute.name} is complex; name a sub-attribute to compare."
            )
        return sub

    def value_path(self, path, inner):
        schema, attribute, sub = self.resolve(path)
        if sub is not None or not attribute.complex:
            raise ScimError.invalid_filter(
                f"A value filter needs a complex attribute, not {str(path)!r}."
            )
        if attribute.multi_valued:
            found = self.any_element(schema, attribute, inner)
            if _is_emails(self, schema, attribute):
                text = _required_substring(inner)
                if text is not None:
                    found = _searched(text, found)
            return found
        return _compile(inner, _ComplexScope(self, path))

    def any_element(self, schema, attribute, inner):
        """Return EXISTS over an attribute's elements matching ``inner``."""
        self.value_paths += 1
        if self.value_paths > MAX_VALUE_PATHS:
            raise ScimError.invalid_filter(
                f"The filter has more than {MAX_VALUE_PATHS} conditions on "
                "multi-valued attributes (such as emails[...] or members eq); "
                f"at most {MAX_VALUE_PATHS} are accepted."
            )
        relation = self.relation(attribute)
        if relation is not None:
            return relation.exists(inner)
        keys = _json_keys(*self.json_keys(schema, attribute))
        alias = self.next_alias("je")
        condition = (
            true()
            if inner is None
            else _compile(inner, _JsonElementScope(attribute, alias))
        )
        return NodeList(
            (
                SQL("EXISTS (SELECT 1 FROM"),
                json_elements(self.model.data, keys, alias),
                SQL("WHERE"),
                condition,
                SQL(")"),
            )
        )

    def sort_key(self, path):
        schema, attribute, sub = self.resolve(path)
        if attribute.complex and sub is None:
            sub = self.implied_value(attribute)
        if not attribute.multi_valued:
            operand = self.scalar(schema, attribute, sub)
            if operand.expr is None:
                return self.model.id
            return _sortable(operand, operand.expr)
        if self.relation(attribute) is not None:
            raise ScimError.invalid_value(f"Cannot sort by {str(path)!r}.")
        # A multi-valued attribute sorts by its primary value, else its first.
        keys = _json_keys(*self.json_keys(schema, attribute))
        sub_key = _json_keys(sub.name) if sub else ()
        target = sub or attribute
        first = json_get(self.model.data, keys + (0,) + sub_key, target.type)
        operand = _Operand(first, target.type, target.case_exact, json=True)
        if attribute.sub("primary") is None:
            return _sortable(operand, first)
        alias = self.next_alias("je")
        primary = NodeList(
            (
                SQL("(SELECT"),
                (
                    element_member(alias, sub.name, target.type)
                    if sub
                    else element_value(alias, target.type)
                ),
                SQL("FROM"),
                json_elements(self.model.data, keys, alias),
                SQL("WHERE"),
                json_flag(element_member(alias, "primary", "boolean")),
                SQL("LIMIT 1)"),
            )
        )
        return _sortable(operand, fn.COALESCE(primary, first))


def _sortable(operand, expr):
    if operand.type in ("string", "reference", "binary") and not operand.case_exact:
        return expr if operand.nocase else nocase(expr)
    return expr


class _ElementScope:
    """Base for scopes whose paths name sub-attributes of one element."""

    def name(self, path):
        if path.urn is not None or path.sub is not None:
            raise ScimError.invalid_filter(
                f"{path} must name a sub-attribute inside a value filter."
            )
        return path.attr

    def value_path(self, path, inner):
        raise ScimError.invalid_filter("Value filters cannot be nested.")

    def leaf(self, path, op, value):
        return _condition(self.operand(self.name(path)), op, value)


class _JsonElementScope(_ElementScope):
    """Sub-attributes of a json_each element aliased ``alias``."""

    def __init__(self, attribute, alias):
        self.attribute = attribute
        self.alias = alias

    def operand(self, name):
        if not self.attribute.complex:
            if name.lower() != "value":
                raise ScimError.invalid_filter(
                    f"{self.attribute.name} has no {name!r}."
                )
            return _Operand(
                element_value(self.alias, self.attribute.type),
                self.attribute.type,
                self.attribute.case_exact,
                json=True,
            )
        sub = self.attribute.sub(name)
        if sub is None:
            raise ScimError.invalid_filter(
                f"{self.attribute.name} has no sub-attribute {name!r}."
            )
        expr = element_member(self.alias, sub.name, sub.type)
        return _Operand(expr, sub.type, sub.case_exact, json=True)


class _ComplexScope(_ElementScope):
    """Sub-attributes of a single-valued complex attribute: manager[value eq "x"]."""

    def __init__(self, parent, path):
        self.parent = parent
        self.path = path

    def leaf(self, path, op, value):
        full = Path(self.path.urn, self.path.attr, self.name(path))
        return self.parent.leaf(full, op, value)


class _RelationScope(_ElementScope):
    """Member or group sub-attributes backed by the columns of ``other``."""

    def __init__(self, other, constant_type):
        self.other = other
        self.constant_type = constant_type

    def operand(self, name):
        lowered = name.lower()
        if lowered == "value":
            return _Operand(self.other.scim_id, case_exact=True)
        if lowered == "display":
            return _Operand(self.other.display_name, nocase=True)
        if lowered == "type":
            return _Operand(None, constant=self.constant_type)
        raise ScimError.invalid_filter(f"{name!r} cannot be filtered here.")


class _LinkScope(_RelationScope):
    """User ``groups`` or Group ``members``: live rows joined through Membership."""

    def __init__(self, parent, other, near, far, constant_type):
        super().__init__(other.alias(parent.next_alias(far[0])), constant_type)
        self.parent = parent
        self.link = Membership.alias(parent.next_alias("m"))
        self.near = getattr(self.link, near)
        self.far = getattr(self.link, far)

    def exists(self, inner):
        other = self.other
        condition = (self.near == self.parent.model.id) & (
            other.deprovisioned_at.is_null()
        )
        if inner is not None:
            condition &= _compile(inner, self)
        query = (
            self.link.select(SQL("1"))
            .join(other, on=(self.far == other.id))
            .where(condition)
        )
        return fn.EXISTS(query)
