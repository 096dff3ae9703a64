"""SCIM errors (RFC 7644 §3.12): one raiseable type that renders as an Error body."""

from . import schema


class ScimError(Exception):
    """An error that ends the request with a SCIM Error body."""

    def __init__(self, status, scim_type=None, detail=None, headers=None):
        super().__init__(detail or scim_type or str(status))
        self.status = status
        self.scim_type = scim_type
        self.detail = detail
        self.headers = headers or {}

    def body(self):
        """Return the Error message; ``status`` is a string per RFC 7644 §3.12."""
        body = {"schemas": [schema.ERROR], "status": str(self.status)}
        if self.scim_type:
            body["scimType"] = self.scim_type
        if self.detail:
            body["detail"] = self.detail
        return body

    @classmethod
    def invalid_filter(cls, detail):
        return cls(400, "invalidFilter", detail)

    @classmethod
    def invalid_syntax(cls, detail):
        return cls(400, "invalidSyntax", detail)

    @classmethod
    def invalid_value(cls, detail):
        return cls(400, "invalidValue", detail)

    @classmethod
    def invalid_path(cls, detail):
        return cls(400, "invalidPath", detail)

    @classmethod
    def no_target(cls, detail):
        return cls(400, "noTarget", detail)

    @classmethod
    def mutability(cls, detail):
        return cls(400, "mutability", detail)

    @classmethod
    def uniqueness(cls, detail):
        return cls(409, "uniqueness", detail)

    @classmethod
    def not_found(cls, detail):
        return cls(404, None, detail)
