"""The SQLAlchemy internals the driver-level fast path (service.store.driver) compiles with.

The fast path runs Core statements on asyncpg and aiosqlite directly, passing values in the
order `SQLCompiler.positiontup` gives and filling in the values a statement carries itself from
`SQLCompiler.binds`. Neither is public API: a SQLAlchemy upgrade that changes them must fail
here, naming the fast path, rather than send values to the wrong placeholders. The pool side
(checkout, `driver_connection`, `invalidate`) is pinned against real databases in
tests/integration/test_store_driver_pool.py.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, cast

import pytest
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from service.store.driver import Query
from service.store.schema import events, order_links, orders

CHANGED = (
    "service.store.driver (the hot paths' driver-level statements) relies on a SQLAlchemy "
    "internal that this SQLAlchemy version changed: {what}. Adapt service.store.driver "
    "before upgrading."
)


def _dialect(url: str, **options: Any) -> Dialect:
    dialect_class: Any = make_url(url).get_dialect()
    return cast(Dialect, dialect_class(**options))


# The dialects the fast path compiles for, and the placeholder style each driver takes.
POSITIONAL: dict[str, Dialect] = {
    "postgresql": _dialect("postgresql+asyncpg://"),  # $1, $2, ... (a number may repeat)
    "sqlite": _dialect("sqlite+aiosqlite://"),  # ?, one per value, in order
}
# The same SQL with named placeholders: which bind each placeholder is, in the text's order.
NAMED: dict[str, tuple[Dialect, re.Pattern[str]]] = {
    "postgresql": (_dialect("postgresql+psycopg2://"), re.compile(r"%\((\w+)\)s")),
    "sqlite": (_dialect("sqlite://", paramstyle="named"), re.compile(r"(?<![:\w]):(\w+)")),
}
DOLLAR = re.compile(r"\$(\d+)")

_MARK_EVENT = (
    update(events)
    .where(events.c.event_id == bindparam("event_key"))
    .values(
        status=bindparam("event_status"),
        attempts=events.c.attempts + 1,
        updated_ms=bindparam("now_ms"),
        processed_ms=bindparam("now_ms"),
    )
)
_SAVE_ORDER = (
    update(orders)
    .where(orders.c.order_id == bindparam("key"))
    .values(
        status=bindparam("new_status"), version=orders.c.version + 1, updated_ms=bindparam("now_ms")
    )
)


def _link(dialect_name: str) -> ClauseElement:
    values: dict[str, Any] = {
        "external_id": bindparam("new_external_id"),
        "kind": bindparam("new_kind"),
        "order_id": bindparam("new_order_id"),
    }
    conflict = [order_links.c.external_id]
    if dialect_name == "postgresql":
        return (
            postgresql_insert(order_links)
            .values(values)
            .on_conflict_do_nothing(index_elements=conflict)
        )
    return sqlite_insert(order_links).values(values).on_conflict_do_nothing(index_elements=conflict)


# Statements shaped like the hot paths': a locking SELECT, a value the statement carries
# (`+ 1`), a bind used twice, a dialect's own INSERT, and a data-modifying WITH whose CTE is
# rendered before the statement that owns it.
STATEMENTS: dict[str, Callable[[str], ClauseElement]] = {
    "select for update": lambda _: (
        select(orders).where(orders.c.order_id == bindparam("key")).with_for_update()
    ),
    "update with a literal and a repeated bind": lambda _: _MARK_EVENT,
    "insert on conflict do nothing": _link,
    "update with a data-modifying cte": lambda _: _SAVE_ORDER.add_cte(
        _MARK_EVENT.cte("processed_event")
    ),
}


def _compile(statement: ClauseElement, dialect: Dialect) -> SQLCompiler:
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    return compiled


def _names_in_text_order(statement: ClauseElement, dialect_name: str) -> list[str]:
    dialect, placeholder = NAMED[dialect_name]
    return placeholder.findall(_compile(statement, dialect).string)


def _names_by_placeholder(compiled: SQLCompiler, dialect_name: str) -> list[str]:
    """The bind each positional placeholder of `compiled` receives under the fast path's rule:
    asyncpg's `$n` takes the n-th value, sqlite3's i-th `?` the i-th value."""
    order = compiled.positiontup
    assert order is not None, CHANGED.format(what="SQLCompiler.positiontup is None")
    if dialect_name == "postgresql":
        return [order[int(number) - 1] for number in DOLLAR.findall(compiled.string)]
    assert compiled.string.count("?") == len(order), CHANGED.format(
        what="SQLCompiler.positiontup no longer has one name per '?'"
    )
    return list(order)


@pytest.mark.parametrize("dialect_name", sorted(POSITIONAL))
@pytest.mark.parametrize("shape", sorted(STATEMENTS))
def test_positiontup_orders_binds_as_the_placeholders(dialect_name: str, shape: str) -> None:
    """`positiontup` names, per asyncpg `$n` and per sqlite `?`, the bind that the same SQL
    written with named placeholders has at that place."""
    statement = STATEMENTS[shape](dialect_name)
    compiled = _compile(statement, POSITIONAL[dialect_name])

    assert hasattr(compiled, "positiontup"), CHANGED.format(what="SQLCompiler.positiontup is gone")
    expected = _names_in_text_order(statement, dialect_name)
    assert expected, "the statement has binds"
    assert _names_by_placeholder(compiled, dialect_name) == expected, CHANGED.format(
        what=f"SQLCompiler.positiontup no longer orders binds as the {dialect_name} placeholders"
    )


@pytest.mark.parametrize("dialect_name", sorted(POSITIONAL))
def test_the_drivers_placeholder_styles(dialect_name: str) -> None:
    """SQL compiled for asyncpg uses `$n` placeholders and for aiosqlite `?`: the styles the fast
    path hands the drivers unchanged."""
    sql = _compile(STATEMENTS["select for update"](dialect_name), POSITIONAL[dialect_name]).string
    if dialect_name == "postgresql":
        assert DOLLAR.search(sql), CHANGED.format(what=f"asyncpg SQL without $n: {sql}")
    else:
        assert "?" in sql, CHANGED.format(what=f"aiosqlite SQL without '?': {sql}")


@pytest.mark.parametrize("dialect_name", sorted(POSITIONAL))
def test_binds_tell_given_values_from_the_statements_own(dialect_name: str) -> None:
    """In `SQLCompiler.binds` a `bindparam(name)` is `required` (the caller gives it), and the
    literal in `attempts + 1` is not required and carries its `value`, 1."""
    compiled = _compile(_MARK_EVENT, POSITIONAL[dialect_name])
    order = compiled.positiontup or []
    given = {"event_key", "event_status", "now_ms"}
    carried = [name for name in order if name not in given]

    assert carried, CHANGED.format(what="the literal in `attempts + 1` is not a bind parameter")
    for name in given:
        assert compiled.binds[name].required, CHANGED.format(
            what=f"SQLCompiler.binds[{name!r}].required is false for a bindparam() without value"
        )
    for name in carried:
        bind = compiled.binds[name]
        assert (bind.required, bind.value) == (False, 1), CHANGED.format(
            what=f"SQLCompiler.binds[{name!r}] has required={bind.required}, value={bind.value}"
            " for the literal 1"
        )


@pytest.mark.parametrize("dialect_name", sorted(POSITIONAL))
def test_query_fills_every_placeholder_once_compiled(dialect_name: str) -> None:
    """A Query compiles once per dialect, names one bind per placeholder and knows the value of
    each bind the caller does not give."""
    query = Query(_MARK_EVENT)
    dialect = POSITIONAL[dialect_name]
    compiled = query.compiled(dialect)

    assert query.compiled(dialect) is compiled
    assert compiled.names == tuple(_compile(_MARK_EVENT, dialect).positiontup or ())
    missing = {"event_key", "event_status", "now_ms"}
    assert {name for name in compiled.names if name not in missing} <= set(compiled.defaults)
    assert set(compiled.defaults.values()) == {1}


def test_greenlet_spawn_is_importable_from_sqlalchemy_util() -> None:
    """`sqlalchemy.util.greenlet_spawn` runs the pool's checkout, close and invalidate for the
    fast path: it is still there and still a coroutine function."""
    from sqlalchemy import util

    spawn = getattr(util, "greenlet_spawn", None)
    assert spawn is not None, CHANGED.format(what="sqlalchemy.util.greenlet_spawn is gone")
    assert inspect.iscoroutinefunction(spawn), CHANGED.format(
        what="sqlalchemy.util.greenlet_spawn is no longer a coroutine function"
    )
