"""Listing helpers for console pages: pages, sort links, search and time filters."""

import math
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from urllib.parse import urlencode

from flask import current_app
from flask import request
from flask import url_for
from peewee import SQL
from peewee import Select
from peewee import Tuple
from peewee import fn

from ..db import database
from ..db import like
from ..db import ordering as sort_order
from ..models import utcnow

PAGE_SIZE = 50
QUICK_RANGES = {
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
}


# Listings count their rows up to this many, then say "more than": an exact
# count of a million rows costs a scan on every page view (MDM_COUNT_CAP).
COUNT_CAP = 10000


class Count:
    """A row count: exact, or only known to be more than ``value``."""

    def __init__(self, value, exact=True):
        self.value = value
        self.exact = exact

    def __add__(self, other):
        return Count(self.value + other.value, self.exact and other.exact)

    def __bool__(self):
        return bool(self.value)

    def __eq__(self, other):
        if isinstance(other, Count):
            return (self.value, self.exact) == (other.value, other.exact)
        return self.exact and self.value == other

    def __hash__(self):
        return hash((self.value, self.exact))

    def __str__(self):
        return str(self.value) if self.exact else f"more than {self.value:,}"

    def __repr__(self):
        return f"Count({self.value!r}, exact={self.exact!r})"


def count_cap():
    """Return the number of rows a listing counts before it says "more than"."""
    try:
        return max(1, int(current_app.config.get("COUNT_CAP", COUNT_CAP)))
    except (RuntimeError, TypeError, ValueError):
        return COUNT_CAP


def capped_count(query, cap=None):
    """Count the rows of ``query`` up to ``cap``; beyond it, a Count "more than cap"."""
    cap = count_cap() if cap is None else cap
    # COUNT over the query as a subquery keeps its LIMIT: the database stops
    # after cap + 1 rows, in whatever order is cheapest.
    return _capped(query.select(SQL("1")).order_by().limit(cap + 1).count(), cap)


def capped_counts(queries, cap=None, db=database):
    """Count the rows of each query of ``db`` up to ``cap``, all in one statement."""
    cap = count_cap() if cap is None else cap
    columns = [
        Select(
            [query.select(SQL("1")).order_by().limit(cap + 1).alias(f"_capped{i}")],
            [fn.COUNT(SQL("1"))],
        )
        for i, query in enumerate(queries)
    ]
    found = Select(columns=columns).tuples().execute(db)
    return [_capped(n, cap) for n in next(iter(found))]


def _capped(n, cap):
    return Count(cap, exact=False) if n > cap else Count(n)


class Pagination:
    """One page of a query, with links that keep the rest of the query string."""

    # The total is counted up to the cap; above it there is no last page to
    # link to, and "Next" is shown when the page read one row beyond itself.

    def __init__(self, query, page, per_page=PAGE_SIZE, total=None, head=None):
        if total is None:
            total = capped_count(query)
        elif not isinstance(total, Count):
            total = Count(total)
        self.total = total
        self.exact = total.exact
        self.per_page = per_page
        self.pages = max(1, math.ceil(total.value / per_page))
        if self.exact:
            self.page = min(max(1, page), self.pages)
        else:
            self.page = max(1, page)
        if head is not None and self.page == 1:
            rows = head
        else:
            offset = (self.page - 1) * per_page
            rows = list(query.limit(per_page + 1).offset(offset))
        self.items = rows[:per_page]
        self.has_next = len(rows) > per_page

    @property
    def first_item(self):
        if not self.items:
            return 0
        return (self.page - 1) * self.per_page + 1

    @property
    def last_item(self):
        if not self.items:
            return 0
        return (self.page - 1) * self.per_page + len(self.items)

    def url(self, page):
        args = request.args.to_dict()
        args["page"] = page
        return f"{request.path}?{urlencode(args)}"


def page_arg():
    """Return the requested page number; anything but an integer means page 1."""
    try:
        return int(request.args.get("page", 1))
    except ValueError:
        return 1


def sort_url(column):
    """Link that sorts by ``column``, flipping the order when it is already the key."""
    args = request.args.to_dict()
    same = args.get("sort") == column
    args["order"] = "desc" if same and args.get("order", "asc") == "asc" else "asc"
    args["sort"] = column
    for name in ("page", "after", "before"):
        args.pop(name, None)
    return f"{request.path}?{urlencode(args)}"


def contains(field, text):
    """Match ``text`` anywhere in ``field``, case-insensitively, with % and _ literal."""
    return like(field, text)


def newest_first(model):
    """Order rows by time, then by insertion, newest first."""
    return model.time.desc(), model.id.desc()


def parse_moment(text, end=False):
    """Parse a date or ISO date-time as naive UTC; a bare ``end`` date covers its whole day."""
    text = (text or "").strip()
    if len(text) == 10:
        day = date.fromisoformat(text)
        moment = datetime.combine(day, time.min)
        return moment + timedelta(days=1) if end else moment
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def time_filters(field, args):
    """Return (conditions, form values, problems) for the from/to/range arguments."""
    conditions = []
    problems = []
    values = {
        "from": args.get("from", "").strip(),
        "to": args.get("to", "").strip(),
        "range": args.get("range", ""),
    }
    if values["range"] in QUICK_RANGES:
        conditions.append(field >= utcnow() - QUICK_RANGES[values["range"]][1])
    else:
        values["range"] = ""
    for key, label in (("from", "From"), ("to", "To")):
        if not values[key]:
            continue
        try:
            moment = parse_moment(values[key], end=key == "to")
        except (ValueError, OverflowError):
            problems.append(
                f"Ignored the “{label}” date {values[key]!r}: use YYYY-MM-DD."
            )
            continue
        if key == "from":
            conditions.append(field >= moment)
        elif len(values[key]) == 10:
            conditions.append(field < moment)
        else:
            conditions.append(field <= moment)
    return conditions, values, problems


def filter_args():
    """Return this page's query arguments without the page number."""
    args = request.args.to_dict()
    for name in ("page", "after", "before"):
        args.pop(name, None)
    return args


def query_url(endpoint, args):
    """Build a URL from a query dict without letting it reach url_for's own options."""
    base = url_for(endpoint)
    return f"{base}?{urlencode(args)}" if args else base


def quick_range_url(key):
    """Link to this page with its time filter replaced by the quick range ``key``."""
    args = filter_args()
    for name in ("from", "to", "range"):
        args.pop(name, None)
    if key:
        args["range"] = key
    return query_url(request.endpoint, args)


class KeysetPages(Pagination):
    """Pages of ``query`` in (key, id) order whose Next and Previous links seek past a row."""

    # Past the capped count an OFFSET would walk every row above the page:
    # "Next" names the last row shown (after=<id>) and "Previous" the first
    # (before=<id>), and the page seeks there through the key's index, so a
    # page a million rows down costs what the first does. A bare page number
    # (typed by hand) still uses OFFSET.

    def __init__(
        self,
        query,
        model,
        key,
        page,
        total,
        descending=False,
        per_page=PAGE_SIZE,
        head=None,
    ):
        self.total = total
        self.exact = False
        self.per_page = per_page
        self.pages = max(1, math.ceil(total.value / per_page))
        self.page = max(1, page)
        order = (query, model, key)
        after = _row_key(model, key, request.args.get("after", ""))
        before = _row_key(model, key, request.args.get("before", ""))
        if after is not None:
            rows = _seek(*order, descending, after, per_page + 1)
            self.items = rows[:per_page]
            self.has_next = len(rows) > per_page
        elif before is not None:
            # The rows before it are the rows after it in the opposite order.
            rows = _seek(*order, not descending, before, per_page)
            self.items = rows[::-1]
            self.has_next = True
        elif self.page == 1:
            if head is None:
                head = _seek(*order, descending, None, per_page + 1)
            rows = head
            self.items = rows[:per_page]
            self.has_next = len(rows) > per_page
        else:
            offset = (self.page - 1) * per_page
            rows = list(query.limit(per_page + 1).offset(offset))
            self.items = rows[:per_page]
            self.has_next = len(rows) > per_page

    def url(self, page):
        args = request.args.to_dict()
        args.pop("after", None)
        args.pop("before", None)
        args["page"] = page
        if self.items and page == self.page + 1:
            args["after"] = self.items[-1].id
        elif self.items and page == self.page - 1 and page > 1:
            args["before"] = self.items[0].id
        return f"{request.path}?{urlencode(args)}"


def _row_key(model, key, pk):
    """Return (key, id) of the row ``pk`` names, or None for a bad or purged one."""
    if not pk.isdigit():
        return None
    return model.select(key, model.id).where(model.id == int(pk)).tuples().first()


def _seek(query, model, key, descending, last, limit):
    """Return up to ``limit`` rows of ``query`` that follow ``last`` in listing order."""
    rows = []
    for segment in _segments(query, model, key, descending, last):
        rows.extend(segment.limit(limit - len(rows)))
        if len(rows) >= limit:
            break
    return rows


def first_rows(query, model, key, descending, per_page=PAGE_SIZE):
    """Return the first page's rows and the next one, when the first page is asked for."""
    # Read before counting: when they are all there is (a search that finds
    # a few users), the count is their number and no COUNT runs.
    args = request.args
    if page_arg() != 1 or args.get("after") or args.get("before"):
        return None
    return _seek(query, model, key, descending, None, per_page + 1)


def keyset_order(key, model, descending):
    """Return the ORDER BY of a keyset listing: NULL keys first ascending, last descending."""
    return sort_order(key, descending), (model.id.desc() if descending else model.id)


def _segments(query, model, key, descending, last):
    """Return the queries whose rows, one after the other, follow ``last`` in listing order."""
    # NULL keys and the others are read apart, so each part is a plain range
    # of the (key, id) index; a row value cannot compare a NULL.
    nulls = query.where(key.is_null()).order_by(
        model.id.desc() if descending else model.id
    )
    values = query.where(key.is_null(False)) if key.null else query
    values = values.order_by(*keyset_order(key, model, descending))
    if last is not None:
        value, pk = last
        if value is None:
            nulls = nulls.where(model.id < pk if descending else model.id > pk)
        else:
            past = Tuple(key, model.id)
            past = past < Tuple(value, pk) if descending else past > Tuple(value, pk)
            values = values.where(past)
    parts = [values, nulls] if descending else [nulls, values]
    if last is not None and last[0] is None:
        # Past a NULL key: ascending, every value is still ahead; descending,
        # only NULLs are.
        parts = parts[-1:] if descending else parts
    elif last is not None:
        parts = parts if descending else parts[1:]
    if not key.null:
        parts = [values]
    return parts
