"""Which database errors mean the database is out of reach (503, try again), and which are bugs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from django.db import DatabaseError, InterfaceError, OperationalError, connection

from core.exceptions import database_unavailable
from tests.processes import free_port


def as_django(error: Exception) -> OperationalError:
    """The driver's error as Django raises it: wrapped, with the driver's error as its cause."""
    try:
        raise OperationalError(*error.args) from error
    except OperationalError as wrapped:
        return wrapped


def test_a_refused_postgresql_connection_is_the_database_being_unavailable() -> None:
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(host="127.0.0.1", port=free_port(), connect_timeout=2)

    assert database_unavailable(as_django(refused.value))


def test_a_sqlite_database_locked_too_long_is_the_database_being_unavailable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    waiter = sqlite3.connect(path, timeout=0, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as locked:
        waiter.execute("BEGIN IMMEDIATE")
    holder.close()
    waiter.close()

    assert database_unavailable(as_django(locked.value))


def test_a_closed_connection_is_the_database_being_unavailable() -> None:
    assert database_unavailable(InterfaceError("connection already closed"))


@pytest.mark.django_db
def test_a_broken_query_is_a_bug_not_an_unavailable_database() -> None:
    with pytest.raises(DatabaseError) as broken, connection.cursor() as cursor:
        cursor.execute("SELECT no_such_column FROM no_such_table")

    assert not database_unavailable(broken.value)


def test_other_errors_are_not_the_database() -> None:
    assert not database_unavailable(ValueError("no"))
