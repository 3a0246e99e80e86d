"""What a database error means for the code that met it, in one place."""

from django.db import DatabaseError, InterfaceError, OperationalError

# SQLSTATEs of a transaction PostgreSQL aborted to settle a conflict with another writer
# of the same rows: deadlock detected, serialization failure, lock not available. Nothing
# of it was kept, so the same work can simply run again.
CONFLICT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


def is_write_conflict(exc):
    """Did the database abort this transaction to break a conflict with another writer?"""
    return isinstance(exc, OperationalError) and getattr(exc.__cause__, "pgcode", None) in CONFLICT_SQLSTATES


def database_unavailable(exc):
    """The database could not do the work (unreachable, restarting, the connection lost,
    or a conflict it aborted): the work is not wrong, and it can be tried again later."""
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DatabaseError) and "connection" in str(exc).lower()
    )
