"""Elements of multi-valued attributes (RFC 7643 §2.4): finding, removing, one primary."""


class Elements:
    """The elements of one attribute, to find an equal one before adding."""

    def __init__(self, items, adding):
        self.items = items
        # Many new elements are looked up by hash so a big array stays
        # linear; a few are found by a scan, cheaper than hashing every item.
        self.index = None
        if adding > 16:
            self.index = {}
            for item in items:
                self.index.setdefault(_key(item), item)

    def find(self, element):
        """Return the first element equal to ``element``, or None."""
        if self.index is not None:
            return self.index.get(_key(element))
        return self.items[self.items.index(element)] if element in self.items else None

    def add(self, element):
        """Append ``element`` and return it."""
        self.items.append(element)
        if self.index is not None:
            self.index[_key(element)] = element
        return element


def _key(item):
    """Return a hashable key equal for equal flat elements, or a unique one."""
    try:
        key = frozenset(item.items()) if isinstance(item, dict) else ("", item)
        hash(key)
    except TypeError:  # an unhashable value: it equals no new element
        return object()
    return key


def without(items, matched):
    """Return ``items`` less the very elements in ``matched`` (by identity)."""
    gone = {id(item) for item in matched}
    return [item for item in items if id(item) not in gone]


class Named:
    """The elements a remove's value array names, looked up by hash."""

    # An element with a ``value`` names the items with that value; one without
    # names the items equal to it on every key it has. Strings compare without
    # case unless the sub-attribute is caseExact (RFC 7643 §2.2).

    def __init__(self, attribute, listed):
        # Names compared -> (their sub-attributes, the set of folded values).
        self.groups = {}
        for element in listed:
            if not element:
                continue
            names = ("value",) if "value" in element else tuple(sorted(element))
            if names not in self.groups:
                subs = tuple(attribute.sub(name) for name in names)
                self.groups[names] = (subs, set())
            subs, wanted = self.groups[names]
            wanted.add(_fold(element, subs))

    def covers(self, item):
        """Return whether some listed element names ``item``."""
        if not isinstance(item, dict):
            return False
        for subs, wanted in self.groups.values():
            try:
                if _fold(item, subs) in wanted:
                    return True
            except TypeError:  # an unhashable stored value equals no listed scalar
                continue
        return False


def _fold(element, subs):
    """Return the values of ``subs`` in ``element`` as Named compares them."""
    folded = []
    for sub in subs:
        value = element.get(sub.name)
        if isinstance(value, str) and not sub.case_exact:
            value = value.lower()
        folded.append(value)
    return tuple(folded)


def one_primary(items, chosen):
    """Keep primary only on the last chosen element that has it (RFC 7643 §2.4)."""
    winner = next(
        (item for item in reversed(chosen) if _true(item.get("primary"))), None
    )
    if winner is None:
        return
    for item in items:
        if item is not winner and isinstance(item, dict) and _true(item.get("primary")):
            item["primary"] = False


def _true(value):
    return value is True or (isinstance(value, str) and value.lower() == "true")
