"""SCIM Bulk (RFC 7644 §3.7): many writes in one request, each applied on its own."""

import itertools
import re
import time
from urllib.parse import unquote
from urllib.parse import urlsplit

from flask import current_app
from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import activity
from .. import webhooks
from ..models import Group
from ..models import User
from . import groups
from . import http
from . import parse
from . import schema
from . import serialize
from . import users
from .blueprint import bp
from .errors import ScimError
from .paths import URL_PREFIX
from .resources import deprovision
from .resources import insert_each

STATUS = {"POST": 201, "PUT": 200, "PATCH": 200, "DELETE": 204}
REFERENCE = re.compile(r"bulkId:(.+)", re.S)
# A PATCH path may name a new resource inside a filter: members[value eq "bulkId:x"].
QUOTED_REFERENCE = re.compile(r'"bulkId:([^"]+)"')
ENDPOINTS = {"users": User, "groups": Group}
ACTIVE, DONE = "active", "done"
# User POSTs written in one transaction: enough to spread a commit's cost,
# few enough that other writers wait a few tens of milliseconds at most.
CREATE_BATCH = 100
_DROP = object()


@bp.post("/Bulk", strict_slashes=False)
def bulk():
    """Apply a BulkRequest's operations and answer a BulkResponse (RFC 7644 §3.7)."""
    config = current_app.config
    body = _read_body(config["SCIM_BULK_MAX_PAYLOAD"])
    items, fail_on_errors = _read_request(body, config["SCIM_BULK_MAX_OPERATIONS"])
    refers = _may_refer(request.get_data(cache=True))
    job = Job(
        [Operation(index, item, refers) for index, item in enumerate(items)],
        fail_on_errors,
        http.user_type(),
    )
    results = job.run()
    failed = sum(1 for result in results if int(result["status"]) >= 400)
    summary = f"{len(results)} of {len(items)} operations applied"
    if failed:
        summary += f", {failed} failed"
    if len(results) < len(items):
        summary += f"; stopped after {failed} errors (failOnErrors)"
    activity.note(summary, resource_type="Bulk")
    return http.respond({"schemas": [schema.BULK_RESPONSE], "Operations": results})


def _read_body(limit):
    """Read the body, refusing one above maxPayloadSize unread when its length is declared."""
    too_large = ScimError(
        413,
        None,
        f"The size of the bulk operation exceeds the maxPayloadSize ({limit} bytes).",
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    request.max_content_length = limit
    try:
        return http.request_body()
    except RequestEntityTooLarge:
        raise too_large from None


def _read_request(body, max_operations):
    """Return a BulkRequest's operations and its failOnErrors (None for no limit)."""
    items = parse.operations_array(body, "A BulkRequest needs an Operations array.")
    if len(items) > max_operations:
        raise ScimError(
            413,
            None,
            f"The bulk request has {len(items)} operations; "
            f"maxOperations is {max_operations}.",
        )
    fail_on_errors = parse.get_key(body, "failOnErrors")
    if isinstance(fail_on_errors, str) and fail_on_errors.strip().isdigit():
        fail_on_errors = int(fail_on_errors)
    if fail_on_errors is None or fail_on_errors == 0:
        # 0 cannot mean "stop before the first error"; clients send it for no limit.
        return items, None
    if (
        isinstance(fail_on_errors, bool)
        or not isinstance(fail_on_errors, int)
        or fail_on_errors < 0
    ):
        raise ScimError.invalid_value("failOnErrors must be a positive integer.")
    return items, fail_on_errors


def _may_refer(raw):
    """Whether a request body's text may hold a bulkId reference anywhere."""
    # Every decoded string is in the text as written, unless a \u escape
    # spells one of its letters: without either, no value of an operation's
    # data can hold one, and the data needs no walk. (A path is percent-
    # decoded, so it is always looked at.)
    return b"bulkId:" in raw or b"\\u" in raw


class Operation:
    """One entry of a BulkRequest, checked but not yet applied."""

    def __init__(self, index, item, refers=True):
        self.index = index
        self.method = self.bulk_id = self.version = self.data = None
        self.model = self.resource_id = None
        self.references = []
        self.error = None
        try:
            self._read(item, refers)
        except ScimError as error:
            self.error = error
        except RecursionError:
            self.error = ScimError.invalid_syntax("The operation is nested too deeply.")

    def _read(self, item, refers):
        if not isinstance(item, dict):
            raise ScimError.invalid_syntax("Each operation must be a JSON object.")
        method = parse.get_key(item, "method")
        if isinstance(method, str):
            # Methods are compared without case, like Entra's "Add" PATCH ops.
            self.method = method.strip().upper()
        bulk_id = parse.get_key(item, "bulkId")
        if bulk_id is not None:
            if not isinstance(bulk_id, str) or not bulk_id:
                raise ScimError.invalid_value("bulkId must be a non-empty string.")
            self.bulk_id = bulk_id
        if self.method not in STATUS:
            raise ScimError.invalid_value(
                f"Unsupported method {_clip(method)!r}: use POST, PUT, PATCH or DELETE."
            )
        version = parse.get_key(item, "version")
        if version is not None and not isinstance(version, str):
            raise ScimError.invalid_value("version must be a string (an ETag).")
        self.version = version
        self.model, self.resource_id = _target(parse.get_key(item, "path"))
        if self.method == "POST" and self.resource_id is not None:
            raise ScimError.invalid_value(
                "A POST path names a resource type, such as /Users or /Groups."
            )
        if self.method != "POST" and self.resource_id is None:
            raise ScimError.invalid_value(
                f"A {self.method} path names one resource, such as /Users/{{id}}."
            )
        if self.resource_id is not None:  # percent-decoded: always looked at
            _references(self.resource_id, self.references)
        if self.method != "DELETE":
            data = parse.get_key(item, "data")
            if not isinstance(data, dict):
                raise ScimError.invalid_syntax(
                    f"A {self.method} operation needs a data object."
                )
            self.data = data
            if refers:
                _references(data, self.references)

    @property
    def endpoint(self):
        return "Users" if self.model is User else "Groups"


def _clip(value):
    return value[:40] if isinstance(value, str) else value


def _target(path):
    """Split an operation path into (model, id); absolute URLs and the prefix are accepted."""
    if not isinstance(path, str) or not path.strip():
        raise ScimError.invalid_value(
            "Each operation needs a path such as /Users or /Users/{id}."
        )
    text = path.strip()
    if "://" in text:
        text = urlsplit(text).path
    if URL_PREFIX + "/" in text:
        text = text.split(URL_PREFIX + "/", 1)[1]
    parts = [part for part in text.split("/") if part]
    model = ENDPOINTS.get(parts[0].lower()) if 0 < len(parts) <= 2 else None
    if model is None:
        raise ScimError.invalid_value(
            f"Bulk operations apply to /Users and /Groups, not {path[:80]!r}."
        )
    return model, unquote(parts[1]) if len(parts) == 2 else None


def _needs(operation):
    """Return the bulkIds an operation refers to (none when it is already refused)."""
    return () if operation.error else operation.references


def _references(value, found):
    """Collect the bulkIds that ``value`` refers to, wherever they appear."""
    if isinstance(value, str):
        match = REFERENCE.fullmatch(value)
        if match:
            found.append(match.group(1))
    elif isinstance(value, list):
        for item in value:
            _references(item, found)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key.lower() == "path" and isinstance(item, str):
                found += QUOTED_REFERENCE.findall(item)
            else:
                _references(item, found)


class Job:
    """Apply a bulk request's operations in order, resolving bulkId references."""

    # An operation that refers to a resource created later in the request runs
    # after it; a cycle of POSTs (A refers to B, B to A) is broken by creating
    # one without the circular reference and setting it once the other exists
    # (RFC 7644 §3.7.1).

    def __init__(self, operations, fail_on_errors, resource_type):
        self.operations = operations
        self.fail_on_errors = fail_on_errors
        self.resource_type = resource_type
        # Read once: each costs a few lookups through Flask's proxies.
        self.base_url, self.source = http.base_url(), http.token_idp()
        self.sender = activity.sender()
        self.errors = 0
        self.results = {}
        self.created = {}  # bulkId: id of the resource its POST created
        self.failed = set()  # bulkIds whose POST failed
        self.state = {}
        self.deferred = []  # POSTs created without their circular references
        self.defined = {}
        for operation in operations:
            if operation.error or operation.method != "POST" or not operation.bulk_id:
                continue
            if operation.bulk_id in self.defined:
                operation.error = ScimError.invalid_value(
                    f"bulkId {operation.bulk_id!r} is used by more than one operation."
                )
            else:
                self.defined[operation.bulk_id] = operation

    @property
    def stopped(self):
        return self.fail_on_errors is not None and self.errors >= self.fail_on_errors

    def run(self):
        """Apply every operation (until failOnErrors is reached); return their results."""
        index = 0
        while index < len(self.operations) and not self.stopped:
            created = self._create_users(index)
            if created:
                index += created
                continue
            self._visit(self.operations[index])
            self._complete_deferred()
            index += 1
        return [self.results[index] for index in sorted(self.results)]

    def _plain_user_post(self, operation):
        """Whether ``operation`` creates a user that refers to nothing and waits for nothing."""
        return (
            operation.method == "POST"
            and operation.model is User
            and operation.error is None
            and not operation.references
            and operation.index not in self.state
        )

    def _create_users(self, start):
        """Create the run of plain user POSTs from ``start`` in one transaction; return how many."""
        # An IdP's initial load is thousands of such POSTs. Each is prepared
        # outside the lock as on its own; only the INSERTs share a
        # transaction. The run ends before an operation that fails to
        # prepare, which then fails on the ordinary path.
        run = itertools.takewhile(
            self._plain_user_post, self.operations[start : start + CREATE_BATCH]
        )
        prepared = []
        notify = None
        for operation in run:
            if notify is None:  # asked once per run, and only for a run
                notify = webhooks.active()
            started = time.perf_counter()
            with activity.operation() as noted:
                try:
                    new = users.prepare_create(
                        operation.data, self.resource_type, self.source, notify
                    )
                except ScimError:
                    break
            prepared.append((operation, new, noted, time.perf_counter() - started))
        if not prepared:
            return 0
        started = time.perf_counter()
        allowed = None
        if self.fail_on_errors is not None:
            allowed = self.fail_on_errors - self.errors
        try:
            errors = insert_each([new for _, new, _, _ in prepared], allowed)
        except ScimError as error:  # a write that never landed: every one fails alike
            errors = [error] * len(prepared)
        # The transaction's time is shared evenly among its operations.
        shared = (time.perf_counter() - started) / len(prepared)
        # Fewer errors than rows: failOnErrors stopped the transaction there.
        for (operation, new, noted, seconds), error in zip(
            prepared, errors, strict=False
        ):
            self.state[operation.index] = DONE
            with activity.operation() as written:
                users.created(new, error is None)
            noted.update({k: v for k, v in written.items() if v is not None})
            row = new.row if error is None else None
            path = f"{URL_PREFIX}/Users"
            self._finish(operation, path, row, error, noted, seconds + shared)
        return len(errors)

    def _visit(self, root):
        """Apply ``root`` after the POSTs it refers to: depth first, on an explicit stack."""
        # A chain of forward references may be as long as the request (1,000
        # operations), deeper than Python's recursion limit.
        if root.index in self.state:
            return
        self.state[root.index] = ACTIVE
        stack = [(root, iter(_needs(root)), set())]
        while stack and not self.stopped:
            operation, needs, circular = stack[-1]
            for bulk_id in needs:
                needed = self.defined.get(bulk_id)
                if needed is None:
                    continue  # reported when the reference is resolved
                state = self.state.get(needed.index)
                if state == ACTIVE:
                    circular.add(bulk_id)
                elif state is None:
                    self.state[needed.index] = ACTIVE
                    stack.append((needed, iter(_needs(needed)), set()))
                    break
            else:
                stack.pop()
                if self._apply(operation, circular) and circular:
                    self.deferred.append(operation)
                self.state[operation.index] = DONE

    def _apply(self, operation, circular):
        """Apply one operation in its own transaction and record its result."""
        started = time.perf_counter()
        path = f"{URL_PREFIX}/Bulk"
        resource_id = row = error = None
        with activity.operation() as noted:
            try:
                if operation.error:
                    raise operation.error
                if operation.resource_id is not None:
                    resource_id = self._resolve(operation.resource_id, ())
                    path = f"{URL_PREFIX}/{operation.endpoint}/{resource_id}"
                else:
                    path = f"{URL_PREFIX}/{operation.endpoint}"
                data = self._resolve(operation.data, circular)
                row = self._write(
                    operation.model,
                    operation.method,
                    resource_id,
                    data,
                    operation.version,
                )
            except ScimError as refused:
                error = refused
        self._finish(
            operation,
            path,
            row,
            error,
            noted,
            time.perf_counter() - started,
            resource_id,
        )
        return row is not None

    def _finish(self, operation, path, row, error, noted, seconds, resource_id=None):
        """Record an operation's result in the response and in the activity log."""
        result = {"method": operation.method} if operation.method else {}
        if operation.bulk_id:
            result["bulkId"] = operation.bulk_id
        if resource_id is not None:
            result["location"] = self._location(operation, resource_id)
        if error is not None:
            result["status"] = str(error.status)
            result["response"] = error.body()
            self.errors += 1
            if operation.method == "POST" and operation.bulk_id:
                self.failed.add(operation.bulk_id)
        else:
            if operation.method == "POST":
                result["location"] = self._location(operation, row.scim_id)
                if operation.bulk_id:
                    self.created[operation.bulk_id] = row.scim_id
            if operation.method != "DELETE":
                result["version"] = serialize.etag(row)
            result["status"] = str(STATUS[operation.method])
        self.results[operation.index] = result
        activity.record_operation(
            operation.method or "?",
            path,
            int(result["status"]),
            noted,
            operation.data,
            result.get("response"),
            seconds,
            self.sender,
        )

    def _write(self, model, method, resource_id, data, version=None):
        """Run one write through the handler its single-resource endpoint uses."""
        resource_type = self.resource_type
        if model is User:
            if method == "POST":
                return users.create(data, resource_type, self.source)
            if method == "PUT":
                return users.replace(resource_id, data, resource_type, version)
            if method == "PATCH":
                return users.apply_patch(resource_id, data, resource_type, version)
        else:
            if method == "POST":
                return groups.create(data, self.source)
            if method == "PUT":
                return groups.replace(resource_id, data, version)
            if method == "PATCH":
                return groups.apply_patch(resource_id, data, version)
        return deprovision(model, resource_id, version)

    def _complete_deferred(self):
        """Set the circular references left out at creation, now that all exist."""
        for operation in self.deferred:
            result = self.results[operation.index]
            resource_id = self.created[operation.bulk_id]
            with activity.operation():
                try:
                    data = self._resolve(operation.data, ())
                    # The POST's whole body again, now with every reference resolved.
                    row = self._write(operation.model, "PUT", resource_id, data)
                except ScimError as error:
                    result["status"] = "409"
                    result["response"] = ScimError(
                        409,
                        None,
                        "The resource was created, but its references to other "
                        f"new resources could not be set: {error.detail}",
                    ).body()
                    self.errors += 1
                    continue
            result["version"] = serialize.etag(row)
        self.deferred = []

    def _resolve(self, value, circular):
        """Return ``value`` with bulkId references replaced by the ids they created."""
        # References in ``circular`` are left out, with the item that holds
        # them (a member, a manager), to be set once their resource exists.
        try:
            resolved = self._substitute(value, circular)
        except RecursionError:
            raise ScimError.invalid_syntax(
                "The operation is nested too deeply."
            ) from None
        return {} if resolved is _DROP else resolved

    def _substitute(self, value, circular):
        if isinstance(value, str):
            match = REFERENCE.fullmatch(value)
            if match is None:
                return value
            if match.group(1) in circular:
                return _DROP
            return self._created_id(match.group(1))
        if isinstance(value, list):
            items = (self._substitute(item, circular) for item in value)
            return [item for item in items if item is not _DROP]
        if isinstance(value, dict):
            resolved = {}
            for key, item in value.items():
                if key.lower() == "path" and isinstance(item, str):
                    resolved[key] = QUOTED_REFERENCE.sub(
                        lambda m: f'"{self._created_id(m.group(1))}"', item
                    )
                    continue
                item = self._substitute(item, circular)
                if item is _DROP:
                    if key.lower() == "value":
                        return _DROP  # {"value": "bulkId:x"} names the whole item
                    continue
                resolved[key] = item
            return resolved
        return value

    def _created_id(self, bulk_id):
        if bulk_id in self.created:
            return self.created[bulk_id]
        if bulk_id in self.failed:
            detail = f"bulkId {bulk_id[:80]!r} names an operation that failed."
        else:
            detail = (
                f"bulkId {bulk_id[:80]!r} is not defined by a POST operation "
                "in this request."
            )
        raise ScimError(409, None, detail)

    def _location(self, operation, resource_id):
        return f"{self.base_url}/{operation.endpoint}/{resource_id}"
