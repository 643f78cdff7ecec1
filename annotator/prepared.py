"""Querysets compiled to SQL once per process, run many times with new values.

Django builds and compiles a queryset's SQL on every evaluation: for the short, hot queries of a
worker's task flow that costs several times what PostgreSQL spends running them (see "Task flow,
in process" in docs/benchmarks.md). ``PreparedQuery`` keeps the compiled form:

    hits_of_group = PreparedQuery(
        lambda group, now: HIT.objects.filter(hit_type__hit_type_id=group, expiration__gt=now)
                                      .order_by("pk")[:1],
        str, datetime)
    hit = hits_of_group.first("3XJ…", clock.now())

``build`` receives one value per declared kind and returns the queryset; every value that varies
from call to call must come in through it (never read the clock or a setting inside ``build``).
On first use the queryset is compiled twice, with two different sets of marker values, and the
plan is kept only if both compilations give the same SQL, every marker lands in a parameter slot
and the other parameters agree: a ``build`` that hides a varying value, or whose SQL depends on
the values themselves (an empty ``__in`` list, an out-of-range integer), is refused at that point
and runs through the ORM instead, every time, with the same results.

On PostgreSQL these statements (and ``PreparedInsert``, ``save_fields`` and ``save_new`` below)
are sent with their values bound by the server (the extended protocol), not spliced into the SQL
text as Django's own cursors do, and prepared on a connection's first use of each: later runs
name the statement kept on the server and send only the values. Both the client's quoting of
every value and the server's parsing and planning of every statement are saved.
``PREPARED_STATEMENTS = False`` (for a connection pooler that cannot keep prepared statements,
such as PgBouncer before 1.21 in transaction mode) sends them as Django sends everything else.

Rows become model instances the way Django's ``ModelIterable`` makes them (``from_db``, the
``select_related`` populators, annotations, deferred fields left deferred), from the compiler
kept from the first compilation. Only PostgreSQL takes the prepared path; other databases (SQLite
in development) run the queryset as built, so both give the same objects.
"""
from __future__ import annotations

import logging
import threading
from contextlib import nullcontext
from datetime import date, datetime, timezone
from typing import Any, Callable

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models.query import FlatValuesListIterable, ModelIterable, ValuesListIterable, get_related_populators
from django.db.transaction import TransactionManagementError
from django.utils.asyncio import async_unsafe

log = logging.getLogger(__name__)

_KINDS = (int, str, datetime)


def _marker(kind: type, salt: int, index: int) -> Any:
    # Values no query of this project writes as a constant; two salts differ in every slot.
    if kind is int:
        # Inside even a small integer column's range (Django drops a comparison with a value
        # outside it); a constant equal to a marker breaks the two compilations' agreement.
        return 28_011 + 1000 * salt + index
    if kind is str:
        return f"\x1fprepared-marker-{salt}-{index}\x1f"
    return datetime(2001, 1 + salt, 1 + index, 0, 0, 0, 7 + salt, tzinfo=timezone.utc)


_preparing_cursor = None  # (the cursor class, what create_cursor needs), made on first use


def _preparing_cursor_class():
    global _preparing_cursor
    if _preparing_cursor is None:
        from django.db.backends.postgresql.base import TIMESTAMPTZ_OID, ServerBindingCursor
        from django.db.backends.postgresql.psycopg_any import register_tzloader
        from psycopg.pq import Format

        class PreparingCursor(ServerBindingCursor):
            # Django connects with prepare_threshold=None (never prepare): these statements
            # are the hot ones, prepared on first use (psycopg keeps up to 100 per connection).
            def execute(self, query, params=None, *, prepare=None, binary=None):
                return super().execute(query, params, prepare=True if prepare is None else prepare,
                                       binary=binary)

            def _send_query_prepared(self, name, pgq, *, binary=None):
                # Django's query log (DEBUG, CaptureQueriesContext) reads the statement from
                # ``_query``, which psycopg sets only for statements it does not prepare.
                self._query = pgq
                return super()._send_query_prepared(name, pgq, binary=binary)

        _preparing_cursor = (PreparingCursor, TIMESTAMPTZ_OID, Format.TEXT, register_tzloader)
    return _preparing_cursor


@async_unsafe
def prepared_cursor(connection):
    """Django's cursor wrapper (execute wrappers, query logging, error translation) around a
    cursor whose values the server binds and whose statements it keeps prepared, on PostgreSQL
    unless ``PREPARED_STATEMENTS`` is off. For hand-written hot statements too (their
    placeholders must be ones PostgreSQL can type: a column compared with a value, not a bare
    ``SELECT %s``)."""
    if connection.vendor != "postgresql" or not getattr(settings, "PREPARED_STATEMENTS", True):
        return connection.cursor()
    # What ``connection.cursor()`` does (``_cursor`` and ``create_cursor`` in Django's
    # PostgreSQL backend), with this cursor class in place of the connection's own: making the
    # connection's cursor only to close and replace it cost 2% of the web tier's CPU under load.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        pg = connection.connection
        if pg.prepare_threshold is None:
            # psycopg prepares nothing while this is None (as Django connects); a threshold no
            # statement reaches lets ``prepare=True`` through and still prepares nothing else.
            pg.prepare_threshold = 1 << 62
        cursor_class, timestamptz, text, register_tzloader = _preparing_cursor_class()
        cursor = cursor_class(pg)
        # As Django's create_cursor: the cursor reads times in the connection's time zone.
        if connection.timezone != pg.adapters.get_loader(timestamptz, text).timezone:
            register_tzloader(connection.timezone, cursor)
        return connection._prepare_cursor(cursor)  # noqa: SLF001 - the wrapper connection.cursor() returns


class _Plan:
    __slots__ = ("sql", "params", "slots", "compiler", "converters", "trim", "for_update",
                 "models", "flat", "model_cls", "init_list", "start", "end", "populators", "annotations")


class PreparedQuery:
    """A queryset factory whose SQL is compiled once per process and database."""

    made: list["PreparedQuery"] = []  # every one made, for the test that checks they all prepare

    def __init__(self, build: Callable[..., Any], *kinds: type) -> None:
        for kind in kinds:
            if kind not in _KINDS:
                raise TypeError(f"PreparedQuery takes int, str and datetime values, not {kind!r}")
        self.build = build
        self.kinds = kinds
        code = getattr(build, "__code__", None)
        self.name = (f"{build.__module__}:{code.co_firstlineno}" if code is not None else repr(build))
        self._plans: dict[tuple[str, str], _Plan | None] = {}
        self._lock = threading.Lock()
        PreparedQuery.made.append(self)

    # --- compiling ---------------------------------------------------------------------------

    def _compile_once(self, using: str, salt: int):
        markers = [_marker(kind, salt, i) for i, kind in enumerate(self.kinds)]
        queryset = self.build(*markers).using(using)
        compiler = queryset.query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        where = {(type(m), m): i for i, m in enumerate(markers)}
        slots = []
        for position, value in enumerate(params):
            # Django may wrap a value for the driver (psycopg's Int2 for a small integer column):
            # the same wrapper is put around each call's value.
            base = next((k for k in _KINDS if isinstance(value, k)), None)
            plain = value if base is None or type(value) is base or base is datetime else base(value)
            index = None if base is None or isinstance(value, bool) else where.get((base, plain))
            if index is not None:
                slots.append((position, index, None if type(value) is base else type(value)))
        return queryset, compiler, sql, list(params), slots

    def _compile(self, using: str) -> _Plan | None:
        connection = connections[using]
        if connection.vendor != "postgresql":
            return None
        try:
            first = self._compile_once(using, 1)
            queryset, compiler, sql, params, slots = self._compile_once(using, 2)
        except Exception:  # EmptyResultSet, FullResultSet, a value the ORM refuses: the ORM decides
            log.warning("PreparedQuery %s runs through the ORM: it does not compile with marker values",
                        self.name, exc_info=True)
            return None
        taken, first_taken = {slot[0] for slot in slots}, {slot[0] for slot in first[4]}
        constants = [(i, v) for i, v in enumerate(params) if i not in taken]
        first_constants = [(i, v) for i, v in enumerate(first[3]) if i not in first_taken]
        if (sql != first[2] or slots != first[4] or constants != first_constants
                or {slot[1] for slot in slots} != set(range(len(self.kinds)))
                or queryset._known_related_objects or compiler.query.combinator
                or queryset._iterable_class not in (ModelIterable, ValuesListIterable, FlatValuesListIterable)):
            log.warning("PreparedQuery %s runs through the ORM: its SQL depends on more than its values", self.name)
            log.debug("%s: %s %s %s | %s %s %s", self.name, first[2], first[3], first[4], sql, params, slots)
            return None
        plan = _Plan()
        plan.sql, plan.params, plan.slots, plan.compiler = sql, params, slots, compiler
        fields = [s[0] for s in compiler.select[0:compiler.col_count]]
        plan.converters = compiler.get_converters(fields)
        plan.trim = compiler.col_count if compiler.has_extra_select else None
        plan.for_update = bool(compiler.query.select_for_update)
        plan.models = queryset._iterable_class is ModelIterable
        plan.flat = queryset._iterable_class is FlatValuesListIterable
        if plan.models:
            klass_info = compiler.klass_info
            plan.model_cls = klass_info["model"]
            select_fields = klass_info["select_fields"]
            plan.start, plan.end = select_fields[0], select_fields[-1] + 1
            plan.init_list = [f[0].target.attname for f in compiler.select[plan.start:plan.end]]
            plan.populators = get_related_populators(klass_info, compiler.select, using)
            plan.annotations = list(compiler.annotation_col_map.items())
        return plan

    def _plan(self, using: str) -> _Plan | None:
        key = (using, connections[using].vendor)
        try:
            return self._plans[key]
        except KeyError:
            with self._lock:
                if key not in self._plans:
                    self._plans[key] = self._compile(using)
                return self._plans[key]

    # --- running -----------------------------------------------------------------------------

    def _rows(self, plan: _Plan, using: str, args: tuple) -> list:
        connection = connections[using]
        if plan.for_update and connection.get_autocommit():
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        params = list(plan.params)
        for position, index, wrap in plan.slots:
            params[position] = args[index] if wrap is None else wrap(args[index])
        with prepared_cursor(connection) as cursor:
            cursor.execute(plan.sql, params)
            rows = cursor.fetchall()
        if plan.trim is not None:
            rows = [row[:plan.trim] for row in rows]
        if plan.converters:
            rows = list(plan.compiler.apply_converters(rows, plan.converters))
        return rows

    def all(self, *args: Any, using: str = DEFAULT_DB_ALIAS) -> list:
        """The queryset's results for these values: model instances, or ``values_list`` rows
        (tuples, or single values when ``flat``)."""
        if len(args) != len(self.kinds):
            raise TypeError(f"expected {len(self.kinds)} values, got {len(args)}")
        plan = self._plan(using)
        if plan is None:
            return list(self.build(*args).using(using))
        rows = self._rows(plan, using, args)
        if plan.flat:
            return [row[0] for row in rows]
        if not plan.models:
            return [tuple(row) for row in rows]
        objs = []
        for row in rows:
            obj = plan.model_cls.from_db(using, plan.init_list, row[plan.start:plan.end])
            for populator in plan.populators:
                populator.populate(row, obj)
            for name, position in plan.annotations:
                setattr(obj, name, row[position])
            objs.append(obj)
        return objs

    def first(self, *args: Any, using: str = DEFAULT_DB_ALIAS):
        """The first result or None (``build`` should order and slice to ``[:1]``)."""
        found = self.all(*args, using=using)
        return found[0] if found else None

    def prepared(self, using: str = DEFAULT_DB_ALIAS) -> bool:
        """Whether this query runs from its compiled SQL on ``using`` (else through the ORM)."""
        return self._plan(using) is not None


_DATETIME_TYPES = (datetime, date)


def array_text(values: list) -> str | None:
    """``values`` as PostgreSQL's text of an array (``{1,NULL,"a \\"b\\""}``), for a statement that
    casts its parameter (``%s::integer[]``); None if a value is not None, a bool, an int, a str
    or a date or time (the caller then passes the list).

    psycopg dumps a list in Python, element by element, to learn and write its type (its
    ``ListDumper``: 3% of the web tier's CPU under load, for the ten label rows of an answer and
    their eleven columns); a str it passes as it is, and PostgreSQL's array input parses it.
    Inside double quotes only ``"`` and ``\\`` are special, so every string is quoted (a quoted
    NULL is the text "NULL"); a time is written by ``isoformat``, its offset included.
    """
    out = []
    for v in values:
        kind = type(v)
        if v is None:
            out.append("NULL")
        elif kind is bool:
            out.append("t" if v else "f")
        elif kind is str or isinstance(v, str):  # a choices member too: its value's characters
            out.append('"' + str.replace(str.replace(v, "\\", "\\\\"), '"', '\\"') + '"')
        elif kind is int or isinstance(v, int):
            out.append(int.__repr__(v))
        elif kind in _DATETIME_TYPES:
            out.append('"' + v.isoformat() + '"')
        else:
            return None
    return "{" + ",".join(out) + "}"


class PreparedInsert:
    """Rows of one model inserted from plain tuples, with SQL built once per process.

    On PostgreSQL: one ``INSERT … SELECT * FROM UNNEST(%s::type[], …)`` with one array per
    column, whatever the number of rows (the statement Django's own ``bulk_create`` sends there),
    without making a model instance per row or rebuilding the SQL. Each value goes through its
    field's ``get_db_prep_save`` as in Django's insert; a field the rows leave out gets its
    default per row, and ``auto_now``/``auto_now_add`` fields the time of the insert. Elsewhere
    (SQLite) the rows go through ``bulk_create``. Nothing is returned (no primary keys).
    """

    def __init__(self, model: type, fields: list[str]) -> None:
        meta = model._meta
        self.model = model
        self.given = [meta.get_field(name) for name in fields]
        for field in self.given:
            if not field.concrete or field.primary_key or getattr(field, "auto_now", False) \
                    or getattr(field, "auto_now_add", False):
                raise TypeError(f"{model.__name__}.{field.name} cannot be given to PreparedInsert")
        given = {f.attname for f in self.given}
        rest = [f for f in meta.concrete_fields if not f.primary_key and f.attname not in given]
        self.stamped = [f for f in rest if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
        self.defaulted = [f for f in rest if f not in self.stamped]
        self.columns = self.given + self.defaulted + self.stamped
        self._sql: dict[str, str] = {}
        if any(hasattr(f, "get_placeholder") or f.db_returning for f in self.columns):
            self._unnest = False  # a field with its own placeholder or a database default
        else:
            self._unnest = True

    def _statement(self, connection) -> str:
        sql = self._sql.get(connection.alias)
        if sql is None:
            qn = connection.ops.quote_name
            names = ", ".join(qn(f.column) for f in self.columns)
            casts = ", ".join(f"(%s)::{f.db_type(connection).split('(')[0]}[]" for f in self.columns)
            sql = self._sql[connection.alias] = (
                f"INSERT INTO {qn(self.model._meta.db_table)} ({names}) SELECT * FROM UNNEST({casts})")
        return sql

    def _direct(self, connection) -> bool:
        return connection.vendor == "postgresql" and self._unnest

    def _columns(self, rows: list[tuple], connection) -> list:
        """One array per column, every value as Django's insert prepares it: PostgreSQL's array
        text where the values allow (``array_text``), else a list for psycopg to dump."""
        return [array_text(column) or column for column in self._values(rows, connection)]

    def _values(self, rows: list[tuple], connection) -> list[list]:
        """One list per column, every value as Django's insert prepares it."""
        from django.utils import timezone

        prep = [f.get_db_prep_save for f in self.given]
        columns = [[p(value, connection) for value in column] for p, column in zip(prep, zip(*rows))]
        if not rows:
            columns = [[] for _ in self.given]
        for field in self.defaulted:
            columns.append([field.get_db_prep_save(field.get_default(), connection) for _ in rows])
        now = timezone.now()
        for field in self.stamped:
            value = field.get_db_prep_save(now.date() if field.get_internal_type() == "DateField" else now,
                                           connection)
            columns.append([value] * len(rows))
        return columns

    def _bulk_create(self, rows: list[tuple], using: str) -> None:
        names = [f.attname for f in self.given]
        self.model._default_manager.using(using).bulk_create([self.model(**dict(zip(names, row))) for row in rows])

    def insert(self, rows: list[tuple], using: str = DEFAULT_DB_ALIAS) -> None:
        if not rows:
            return
        connection = connections[using]
        if not self._direct(connection):
            self._bulk_create(rows, using)
            return
        with prepared_cursor(connection) as cursor:
            cursor.execute(self._statement(connection), self._columns(rows, connection))


_UPDATE_SQL: dict[tuple, str] = {}


def save_fields(obj, fields: tuple[str, ...], using: str = DEFAULT_DB_ALIAS) -> None:
    """``obj.save(update_fields=fields)`` with its UPDATE built once per model and fields.

    The same values reach the database (each field's ``pre_save`` and ``get_db_prep_save``) and a
    row that is gone raises as Django does; the model's ``pre_save``/``post_save`` receivers, if it
    has any, get the ordinary ``save``.
    """
    from django.db import DatabaseError
    from django.db.models import signals

    model = type(obj)
    if signals.pre_save.has_listeners(model) or signals.post_save.has_listeners(model):
        obj.save(update_fields=fields, using=using)
        return
    connection = connections[using]
    meta = model._meta
    key = (model, fields, connection.alias)
    sql = _UPDATE_SQL.get(key)
    if sql is None:
        qn = connection.ops.quote_name
        sets = ", ".join(f"{qn(meta.get_field(name).column)} = %s" for name in fields)
        sql = _UPDATE_SQL[key] = f"UPDATE {qn(meta.db_table)} SET {sets} WHERE {qn(meta.pk.column)} = %s"
    params = []
    for name in fields:
        field = meta.get_field(name)
        params.append(field.get_db_prep_save(field.pre_save(obj, False), connection))
    params.append(meta.pk.get_db_prep_value(obj.pk, connection))
    with prepared_cursor(connection) as cursor:
        cursor.execute(sql, params)
        if cursor.rowcount == 0:
            raise DatabaseError("Save with update_fields did not affect any rows.")
    obj._state.db = using


_INSERT_SQL: dict[tuple, tuple[str, list]] = {}


def _insert_plan(model, connection) -> tuple[str, list]:
    """The INSERT … RETURNING of a new row of ``model`` and its fields ("" where it cannot be used)."""
    meta = model._meta
    key = (model, connection.alias)
    plan = _INSERT_SQL.get(key)
    if plan is None:
        fields = [f for f in meta.concrete_fields if not (f.primary_key and f.get_internal_type() in (
            "AutoField", "BigAutoField", "SmallAutoField"))]
        usable = connection.vendor == "postgresql" and not any(
            hasattr(f, "get_placeholder") or f.db_returning for f in fields)
        qn = connection.ops.quote_name
        sql = (f"INSERT INTO {qn(meta.db_table)} ({', '.join(qn(f.column) for f in fields)}) "
               f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING {qn(meta.pk.column)}") if usable else ""
        plan = _INSERT_SQL[key] = (sql, fields)
    return plan


def _saves_directly(model, sql: str) -> bool:
    from django.db.models import signals

    return bool(sql) and not (signals.pre_save.has_listeners(model) or signals.post_save.has_listeners(model))


def _saved(obj, pk, using: str):
    obj.pk = pk
    obj._state.adding = False
    obj._state.db = using
    return obj


def save_new(obj, using: str = DEFAULT_DB_ALIAS):
    """``obj.save(force_insert=True)`` for a new row, with its INSERT built once per model.

    Every concrete column but an automatic key is written with the value Django's insert would
    write (each field's ``pre_save(add=True)``, so ``auto_now_add`` is stamped, then
    ``get_db_prep_save``); the new key comes back with ``RETURNING`` on PostgreSQL. Models with
    ``pre_save``/``post_save`` receivers, or a field with a database default or its own
    placeholder, and other databases get the ordinary ``save``. Returns ``obj``.
    """
    model = type(obj)
    connection = connections[using]
    sql, fields = _insert_plan(model, connection)
    if not _saves_directly(model, sql):
        obj.save(force_insert=True, using=using)
        return obj
    params = [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
    with prepared_cursor(connection) as cursor:
        cursor.execute(sql, params)
        return _saved(obj, cursor.fetchone()[0], using)


_WITH_SQL: dict[tuple, str] = {}


def save_new_with(obj, insert: PreparedInsert, rows: list[tuple], using: str = DEFAULT_DB_ALIAS):
    """``save_new(obj)`` and ``insert.insert(rows)``, both or neither. Returns ``obj``.

    On PostgreSQL one statement does both (the rows' INSERT as a data-modifying ``WITH`` before
    the object's INSERT … RETURNING): a single statement is atomic by itself, so outside a
    transaction no BEGIN and COMMIT are sent, and a failure (a unique constraint) stores nothing.
    Inside a caller's transaction it runs in a savepoint, so that such a failure leaves that
    transaction usable (as ``atomic`` would). Elsewhere, or for a model ``save_new`` would not
    insert directly, the two run in one ``atomic`` block.
    """
    from django.db import transaction

    model = type(obj)
    connection = connections[using]
    sql, fields = _insert_plan(model, connection)
    if not (_saves_directly(model, sql) and insert._direct(connection)):
        with transaction.atomic(using=using):
            save_new(obj, using=using)
            insert.insert(rows, using=using)
        return obj
    key = (model, insert, connection.alias)
    statement = _WITH_SQL.get(key)
    if statement is None:
        statement = _WITH_SQL[key] = f"WITH rows_inserted AS ({insert._statement(connection)}) {sql}"
    params = insert._columns(rows, connection) + [f.get_db_prep_save(f.pre_save(obj, True), connection)
                                                  for f in fields]
    with transaction.atomic(using=using) if connection.in_atomic_block else nullcontext():
        with prepared_cursor(connection) as cursor:
            cursor.execute(statement, params)
            return _saved(obj, cursor.fetchone()[0], using)
