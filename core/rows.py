"""Model instances from hand-written SQL, for the few reads that run on every request.

Building a query through the ORM costs more Python than the query costs the database on the
labelling loop's hot path; these helpers let such a read be one fixed SQL string while still
giving ordinary model instances (every column, the same conversions the ORM applies).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, models

M = TypeVar("M", bound=models.Model)
Converter = Callable[[Any, Any, Any], Any]


def columns(model: type[models.Model], alias: str) -> str:
    """The select list of every concrete column of `model`, read from table `alias`."""
    return ", ".join(f"{alias}.{connection.ops.quote_name(str(f.column))}" for f in _fields(model))


def width(model: type[models.Model]) -> int:
    """How many values `columns(model, …)` selects."""
    return len(_fields(model))


def instance(model: type[M], values: Sequence[Any]) -> M:
    """The model instance of a row selected with `columns(model, …)`."""
    fields, converters = _fields(model), _converters(model, connection.vendor)
    converted = list(values)
    for position, col, functions in converters:
        for convert in functions:
            converted[position] = convert(converted[position], col, connection)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def _fields(model: type[models.Model]) -> list[Any]:
    return list(model._meta.concrete_fields)


@functools.cache
def _converters(model: type[models.Model], vendor: str) -> list[tuple[int, Any, list[Converter]]]:
    """What the ORM would apply to each column read from this database (vendor-keyed)."""
    found = []
    for position, field in enumerate(_fields(model)):
        col = field.get_col(model._meta.db_table)
        functions = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        if functions:
            found.append((position, col, functions))
    return found


def cursor() -> Any:
    """A cursor for the hot path's few fixed statements.

    On PostgreSQL (unless QUORUM_PREPARED_STATEMENTS is off, say behind a pooler that does not
    keep them) its parameters are bound by the server and each statement is prepared once per
    connection: PostgreSQL then no longer plans it on every request, which for the labelling
    loop's joins costs more than running them. The cursor comes through Django's own path
    (health check, time zone, query logging); only the class of the psycopg cursor differs.
    """
    if connection.vendor != "postgresql" or not settings.PREPARED_STATEMENTS:
        return connection.cursor()
    connection.ensure_connection()
    raw = connection.connection
    factory = raw.cursor_factory
    raw.cursor_factory = _preparing_cursor()
    try:
        return connection.cursor()
    finally:
        raw.cursor_factory = factory


@functools.cache
def _preparing_cursor() -> type:
    """Django's server-binding psycopg cursor, preparing every statement it runs."""
    from django.db.backends.postgresql import base  # PostgreSQL only

    server_binding: Any = base.ServerBindingCursor

    class PreparingCursor(server_binding):
        def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
            return super().execute(query, params, **{"prepare": True, **options})

    return PreparingCursor
