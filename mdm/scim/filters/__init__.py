"""SCIM filters (RFC 7644 §3.4.2.2): parse, evaluate in Python, and compile to SQL."""

# grammar   filter and PATCH path text to an AST (pure)
# evaluate  the AST tested against one element of a multi-valued attribute (pure)
# sql       the AST compiled to peewee expressions over the models

from .evaluate import as_bool
from .evaluate import matches
from .grammar import MAX_DEPTH
from .grammar import MAX_LENGTH
from .grammar import MAX_TERMS
from .grammar import MAX_VALUE_PATHS
from .grammar import And
from .grammar import Compare
from .grammar import Not
from .grammar import Or
from .grammar import PatchPath
from .grammar import Path
from .grammar import Present
from .grammar import ValuePath
from .grammar import parse
from .grammar import parse_attribute_path
from .grammar import parse_path
from .grammar import simple_eq
from .sql import bounds_a_time
from .sql import counted_value
from .sql import member_expression
from .sql import selects_a_value
from .sql import sort_expression
from .sql import to_expression

__all__ = [
    "as_bool",
    "bounds_a_time",
    "counted_value",
    "selects_a_value",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_TERMS",
    "MAX_VALUE_PATHS",
    "And",
    "Compare",
    "Not",
    "Or",
    "PatchPath",
    "Path",
    "Present",
    "ValuePath",
    "matches",
    "member_expression",
    "parse",
    "parse_attribute_path",
    "parse_path",
    "simple_eq",
    "sort_expression",
    "to_expression",
]
