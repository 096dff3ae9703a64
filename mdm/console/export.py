"""CSV and JSON downloads of the activity log and audit trail, streamed in batches."""

import csv
import io
import json
from datetime import datetime

from flask import Response

from ..activity import activity_db
from ..models import utcnow
from .paging import newest_first

EXPORT_BATCH = 1000
# A spreadsheet runs a cell starting with one of these as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """Return ``value`` for a CSV cell, defusing text a spreadsheet would run as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def stamp():
    """Return the current UTC time for a download's file name."""
    return utcnow().strftime("%Y%m%d-%H%M%S")


def batches(query, model):
    """Yield the rows of ``query`` newest first, in keyset batches, each in its own connection."""
    last = None
    while True:
        batch_query = query
        if last is not None:
            batch_query = batch_query.where(
                (model.time < last["time"])
                | ((model.time == last["time"]) & (model.id < last["id"]))
            )
        with activity_db.connection_context():
            rows = list(
                batch_query.order_by(*newest_first(model)).limit(EXPORT_BATCH).dicts()
            )
        if not rows:
            return
        yield from rows
        last = rows[-1]


def csv_chunks(rows, columns):
    """Yield ``rows`` (dicts) as injection-safe CSV text, about 64 KiB at a time."""
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(label for label, _ in columns)
    for row in rows:
        out.writerow(csv_cell(value(row)) for _, value in columns)
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def json_value(value):
    """Return ``value`` as JSON can hold it: datetimes in UTC ISO form."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_chunks(rows):
    """Yield ``rows`` (dicts) as the text of a JSON array, one element per line."""
    yield "["
    for index, row in enumerate(rows):
        text = json.dumps(row, ensure_ascii=False, default=json_value)
        yield ("," if index else "") + "\n" + text
    yield "\n]\n"


def attachment(chunks, mimetype, filename):
    """Return a streamed download of the text ``chunks``."""
    return Response(
        chunks,
        mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def csv_response(rows, columns, filename):
    """Stream ``rows`` (dicts) as an injection-safe CSV attachment."""
    return attachment(csv_chunks(rows, columns), "text/csv", filename)


def json_response(rows, filename):
    """Stream ``rows`` (dicts) as a JSON array attachment, times in UTC ISO form."""
    return attachment(json_chunks(rows), "application/json", filename)
