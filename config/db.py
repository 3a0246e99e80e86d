"""Database helpers in one place: what an error means for the code that met it, and
the hot statements prepared once per connection."""

import hashlib

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError

# SQLSTATEs of a transaction PostgreSQL aborted to settle a conflict with another writer
# of the same rows: deadlock detected, serialization failure, lock not available. Nothing
# of it was kept, so the same work can simply run again.
CONFLICT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
# A prepared statement this session should hold is gone: something reset the session
# under the connection (DISCARD ALL, a pooler in transaction mode).
MISSING_PREPARED_STATEMENT = "26000"
# Statements prepared per connection at most; the hot paths need a handful.
MAX_PREPARED_STATEMENTS = 32


def is_write_conflict(exc):
    """Did the database abort this transaction to break a conflict with another writer?"""
    return isinstance(exc, OperationalError) and getattr(exc.__cause__, "pgcode", None) in CONFLICT_SQLSTATES


def database_unavailable(exc):
    """The database could not do the work (unreachable, restarting, the connection lost,
    a conflict it aborted, or the session's prepared statements gone): the work is not
    wrong, and it can be tried again later."""
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DatabaseError) and (
            "connection" in str(exc).lower()
            or getattr(exc.__cause__, "pgcode", None) == MISSING_PREPARED_STATEMENT
        )
    )


def execute_prepared(cursor, sql, params, *, prefix=""):
    """``cursor.execute(prefix + sql, params)``, with ``sql`` prepared once per
    connection on PostgreSQL (``FUNIL_DB_PREPARED_STATEMENTS``): each later run sends
    ``EXECUTE name(values)``, which PostgreSQL neither analyses nor plans again. ``sql``
    uses ``%s`` placeholders only; ``prefix`` is SQL run before it in the same round
    trip, never prepared.

    The first time, ``prefix`` and the PREPARE go in one round trip and the EXECUTE in
    the next, so that a statement is recorded as prepared only once PostgreSQL has it
    (a PREPARE outlives the rollback of its transaction; one that failed left nothing)."""
    db = cursor.db
    if db.vendor != "postgresql" or not settings.FUNIL_DB_PREPARED_STATEMENTS:
        cursor.execute(prefix + sql, params)
        return
    names = _prepared_names(db)
    name = names.get(sql)
    if name is None:
        if len(names) >= MAX_PREPARED_STATEMENTS:
            cursor.execute(prefix + sql, params)
            return
        name = "funil_" + hashlib.blake2b(sql.encode(), digest_size=8).hexdigest()
        cursor.execute(f"{prefix}PREPARE {name} AS {_numbered(sql)}")
        names[sql] = name
        prefix = ""
    arguments = f"({', '.join(['%s'] * len(params))})" if params else ""
    try:
        cursor.execute(f"{prefix}EXECUTE {name}{arguments}", params)
    except DatabaseError as exc:
        if getattr(exc.__cause__, "pgcode", None) == MISSING_PREPARED_STATEMENT:
            names.clear()  # prepared again from the next transaction on
        raise


def _prepared_names(db):
    """``{sql: name}`` of the statements prepared on ``db``'s current connection."""
    state = getattr(db, "funil_prepared", None)
    if state is None or state[0] is not db.connection:  # a new connection holds none
        state = db.funil_prepared = (db.connection, {})
    return state[1]


def _numbered(sql):
    """``sql`` with its ``%s`` placeholders numbered ``$1``, ``$2``… as PREPARE wants."""
    parts = sql.split("%s")
    if "%" in "".join(parts):
        raise ValueError("execute_prepared: only %s placeholders are supported")
    return "".join(part + (f"${index}" if index < len(parts) else "") for index, part in enumerate(parts, 1))
