"""Files in the data folder: created owner-only, tightened where an older install left them open."""

import logging
import os
import stat

# SQLite's own files beside a database; it creates them with the database
# file's permissions, so an owner-only database keeps them owner-only too.
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")

log = logging.getLogger("mdm")


def create_private(path, exclusive=False):
    """Create ``path`` readable by its owner only (if it is missing) before anything writes it."""
    # os.open's mode applies at creation, under any umask, with no moment at
    # which the file is readable by others; a umask change would be
    # process-wide and race with other threads creating files.
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else 0)
    os.close(os.open(path, flags, 0o600))


def sqlite_file(path):
    """Create a SQLite database file owner-only, or tighten the one there and its companions."""
    if not path or path == ":memory:" or str(path).startswith("file:"):
        return
    try:
        create_private(str(path))
        tighten(*sqlite_family(path))
    except OSError:
        pass  # a missing folder or a file not ours: SQLite says so when it opens it


def sqlite_family(path):
    """Return the paths of a SQLite database file and of the files SQLite keeps beside it."""
    return [f"{path}{suffix}" for suffix in SQLITE_SUFFIXES]


def tighten(*paths):
    """Make any of ``paths`` others may read owner-only (folders 700, files 600), in one warning."""
    loose = []
    for path in paths:
        try:
            status = os.stat(path)
        except FileNotFoundError:
            continue
        current = stat.S_IMODE(status.st_mode)
        if current & 0o077:
            owner = 0o700 if stat.S_ISDIR(status.st_mode) else 0o600
            try:
                os.chmod(path, current & owner)
            except PermissionError:  # another user's file: say so, change nothing
                log.warning("%s is readable by other users (%o).", path, current)
                continue
            loose.append(f"{path} ({current:o})")
    if loose:
        log.warning("Readable by other users, now owner-only: %s.", ", ".join(loose))
    return loose
