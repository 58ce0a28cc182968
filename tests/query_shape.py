"""A static check that a SQL statement keeps the distributed shape (Citus, by customer).

On Citus (README, Past one database: rules R1-R3 and the numbered findings) a statement that
joins two tables distributed by customer without equating their customers cannot be pushed
down to the shards: Citus refuses it or pulls a table to the coordinator; a statement that takes row locks
runs only when it routes to one shard. Both are visible in the statement's text, so this module
reads the text with PostgreSQL's own parser (pglast wraps libpg_query, the parser of the
server itself: whatever the server accepts, it parses the same way, CTEs, LATERAL, plpgsql
bodies included) and reports what breaks the shape, without a cluster.

The model: every table reference of a statement (in any CTE, subquery, LATERAL item or
sublink) is an *instance*; every column is a node; two union-finds over the nodes say which
columns are the same column (a subquery's or CTE's output column is its source column:
``same``) and which are equal in every row the statement reads (``same`` plus the equalities
of ON and WHERE conjuncts, through parameters and constants too: ``equal``). Checks run once
the whole statement is read, so an equality written in an outer block counts for a join in a
CTE, as PostgreSQL's planner carries it there.

What is a join (R1): the FROM items of one block (JOIN ... ON / USING, comma joins, LATERAL
items) pairwise, and each subquery of its expressions that is correlated (a nested loop over
the block's rows) or an IN / = ANY (a semi-join) with each FROM item. Not a join: an
uncorrelated EXISTS, scalar or ARRAY subquery, or an uncorrelated block that folds its rows
into one (count(*) without GROUP BY): Citus computes those first, as a subplan, and joins the
result like a constant. What a CTE or subquery joins is the customer tables its rows come from.
R1 also reports a customer table joined to rows of no customer table where Citus cannot push
the join down: in a subquery correlated to a function, a reference table or a CTE's result
("correlated subqueries are not supported when the FROM clause contains a set returning
function"), or outer-joined from one (finding 7: the table is pulled whole), unless the
table is pinned to its customers as R2 asks.

R3 (report only) lists nextval() in a statement that locks rows (finding 2), non-IMMUTABLE
functions in RETURNING of a distributed write or in CASE / COALESCE of an UPDATE or DELETE
(finding 3), and calls of functions that touch distributed tables: LANGUAGE sql ones anywhere
(finding 4), plpgsql ones inside a statement that itself reads tables (finding 8).

Checked on the Citus 13.2 cluster (a database of the migrated schema):
a join on lease_id alone is refused; the same join through a CTE or an uncorrelated IN runs by
pulling money_movements whole to the coordinator (a subplan without a filter); FOR UPDATE runs
with `= $1` on one table of a co-located join, but with `= ANY($1)` only when every table
carries it; a LATERAL subquery or a scalar one correlated to unnest() or to a reference table
is refused unless pinned. Of the 172 named queries run there once, 61 of the 69 flagged are
refused, 5 run through whole-table subplans (3 failed on the dummy data first).

Known approximations: every reference of one CTE shares its output columns, and so do a set
operation's branches (an equality on one reference counts for all); a column reference that
resolves nowhere is ignored; a function's volatility is that of its name (any overload not
IMMUTABLE counts), without argument types.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums, parse_plpgsql, parse_sql

from collector.db.distribution import TABLES

# Functions Citus refuses in RETURNING of a distributed modification when no catalog is at
# hand (the unit tests); the test of the real statements reads every non-IMMUTABLE function
# name from pg_proc instead.
DEFAULT_MUTABLE_FUNCTIONS = frozenset(
    {
        "now",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "timeofday",
        "random",
        "nextval",
        "txid_current",
        "gen_random_uuid",
    }
)

# Aggregates, to tell a block that folds its rows into one (without a catalog at hand).
DEFAULT_AGGREGATES = frozenset(
    {"count", "sum", "min", "max", "avg", "array_agg", "bool_and", "bool_or", "every",
     "string_agg", "jsonb_agg", "json_agg", "jsonb_object_agg"}
)  # fmt: skip

# Finding 1: Citus (PostgreSQL's equivalence classes, in fact) carries `= const` or
# `= $param` across a join's equality, but NOT `= ANY($customers)`. So an ANY filter counts
# only for the table reference it is written on (or a subquery column that is that
# reference's column), never through a join's equality.
ANY_CARRIES_ACROSS_EQUALITY = False


@dataclass(frozen=True, slots=True)
class Schema:
    """Where each table lives and which columns it has (for unqualified column names)."""

    # table -> (placement, distribution column), for the tables distributed by customer or
    # by value; reference and local tables are absent (joinable with anything, never routed).
    distributed: Mapping[str, tuple[str, str]]
    columns: Mapping[str, frozenset[str]] = field(default_factory=dict)
    mutable_functions: frozenset[str] = DEFAULT_MUTABLE_FUNCTIONS
    aggregates: frozenset[str] = DEFAULT_AGGREGATES
    # Functions of the schema whose statements read or write distributed tables, by name:
    # their language ("sql" or "plpgsql"); see functions_touching_tables.
    table_functions: Mapping[str, str] = field(default_factory=dict)


def collector_distribution() -> dict[str, tuple[str, str]]:
    """The distributed tables of collector/db/distribution.py, with their columns."""
    return {
        t.name: (t.placement, t.column)
        for t in TABLES
        if t.placement in ("customer", "value") and t.column is not None
    }


@dataclass(frozen=True, slots=True, order=True)
class Violation:
    """A rule a statement breaks: R1 (join not co-located), R2 (a locking statement not
    routed to one shard), R3 (nextval or a non-IMMUTABLE function where Citus refuses them),
    R0 (a statement the check cannot read)."""

    rule: str
    statement: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule} {self.statement}: {self.detail}"


Key = tuple[Any, ...]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Key, Key] = {}

    def find(self, k: Key) -> Key:
        parent = self.parent.setdefault(k, k)
        if parent != k:
            parent = self.parent[k] = self.find(parent)
        return parent

    def union(self, a: Key, b: Key) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


@dataclass(eq=False)
class _Instance:
    """One reference to a table in the statement."""

    uid: int
    table: str
    alias: str
    placement: str | None  # "customer", "value" or None (reference/local table)
    column: str | None  # its distribution column
    insert_target: bool = False
    path: str = ""  # the CTEs and subqueries it is inside, "cte/sub/"

    @property
    def label(self) -> str:
        name = self.table if self.alias == self.table else f"{self.alias}({self.table})"
        return self.path + name

    def key(self, column: str) -> Key:
        return ("col", self.uid, column)


@dataclass(eq=False)
class _Output:
    """What a block (or CTE, or subquery) yields: its columns and the customer tables whose
    rows it carries (the ones a join with it joins)."""

    columns: list[tuple[str, Key]]
    carried: list[_Instance]


@dataclass(eq=False)
class _Item:
    """A name in a FROM clause: a table reference or a derived source."""

    name: str
    instance: _Instance | None = None
    known_columns: frozenset[str] | None = None  # for a table: None when unknown
    derived: dict[str, Key] | None = None  # for a subquery, CTE or function
    carried: list[_Instance] = field(default_factory=list)
    sublink: bool = False  # a subquery of an expression, joined with the FROM items only

    def column(self, name: str, strict: bool) -> Key | None:
        if self.instance is not None:
            if self.known_columns is None:
                return None if strict else self.instance.key(name)
            return self.instance.key(name) if name in self.known_columns else None
        assert self.derived is not None
        return self.derived.get(name)

    def all_columns(self) -> list[tuple[str, Key]]:
        if self.instance is not None:
            return [(c, self.instance.key(c)) for c in sorted(self.known_columns or ())]
        assert self.derived is not None
        return list(self.derived.items())


@dataclass(eq=False)
class _Scope:
    parent: _Scope | None
    items: list[_Item] = field(default_factory=list)
    ctes: dict[str, _Output] = field(default_factory=dict)
    correlated: bool = False  # a column of an enclosing block is read in this block
    outer_items: list[_Item] = field(default_factory=list)  # the enclosing items it reads

    def cte(self, name: str) -> _Output | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.ctes:
                return scope.ctes[name]
            scope = scope.parent
        return None


def _function_name(call: Any) -> str:
    return str(call.funcname[-1].sval)


def _sql_value_name(node: Any) -> str:
    # SQLValueFunctionOp.SVFOP_CURRENT_DATE -> "current_date"
    return str(node.op.name).removeprefix("SVFOP_").lower()


def _strip(node: Any) -> Any:
    while isinstance(node, ast.TypeCast | ast.CollateClause):
        node = node.arg
    return node


def _children(node: Any) -> Iterator[Any]:
    if isinstance(node, tuple | list):
        yield from node
    elif isinstance(node, ast.Node):
        kind: Any = type(node)  # pglast declares each node's fields in __slots__
        for slot in kind.__slots__:
            value = getattr(node, slot)
            if isinstance(value, ast.Node | tuple | list):
                yield value


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for child in _children(node):
        yield from _walk(child)


def _sublinks_free_walk(node: Any) -> Iterator[Any]:
    """The nodes of an expression outside its sublinks."""
    yield node
    if isinstance(node, ast.SubLink):
        return
    for child in _children(node):
        yield from _sublinks_free_walk(child)


def _sublinks(node: Any) -> Iterator[ast.SubLink]:
    """The sublinks of an expression, not those nested in them (each is its own block)."""
    if isinstance(node, ast.SubLink):
        yield node
        return
    if isinstance(node, ast.SelectStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
        return
    for child in _children(node):
        yield from _sublinks(child)


def _conjuncts(node: Any) -> Iterator[Any]:
    """The AND-ed parts of a condition: only those hold for every row (an equality under OR
    or NOT proves nothing about a join)."""
    if node is None:
        return
    if isinstance(node, ast.BoolExpr) and node.boolop == enums.BoolExprType.AND_EXPR:
        for arg in node.args or ():
            yield from _conjuncts(arg)
    elif (folded := _folded_any(node)) is not None:
        yield folded
    else:
        yield node


def _folded_any(node: Any) -> Any:
    """`(p IS NULL OR col = ANY (p))` (sql/0030): under a plan made for a given p (Citus
    plans these functions per call), `p IS NULL` folds to false and the `= ANY` is what
    remains; None for anything else."""
    if not (isinstance(node, ast.BoolExpr) and node.boolop == enums.BoolExprType.OR_EXPR):
        return None
    args = list(node.args or ())
    if len(args) != 2:
        return None
    null_test, any_part = args
    if not (
        isinstance(null_test, ast.NullTest)
        and null_test.nulltesttype == enums.NullTestType.IS_NULL
        and isinstance(any_part, ast.A_Expr)
        and any_part.kind == enums.A_Expr_Kind.AEXPR_OP_ANY
    ):
        return None
    tested, listed = null_test.arg, _strip(any_part.rexpr)
    if not (isinstance(tested, ast.ColumnRef) and isinstance(listed, ast.ColumnRef)):
        return None
    names = [getattr(f, "sval", None) for f in tested.fields or ()]
    return any_part if names == [getattr(f, "sval", None) for f in listed.fields or ()] else None


def _op_name(node: Any) -> str | None:
    names = node.name if isinstance(node, ast.A_Expr) else node.operName
    if not names:
        return "=" if isinstance(node, ast.SubLink) else None  # `x IN (SELECT ...)`
    return str(names[-1].sval)


class _Statement:
    """The reading of one statement; ``violations()`` once it is read."""

    def __init__(self, name: str, schema: Schema, variables: frozenset[str]) -> None:
        self.name = name
        self.schema = schema
        self.variables = variables  # plpgsql variables / SQL function arguments: parameters
        self.same = _UnionFind()
        self.equal = _UnionFind()
        self.any_filtered: list[Key] = []
        self.values: list[Key] = []  # parameter and constant nodes
        self.instances: list[_Instance] = []
        self.pairs: list[tuple[_Instance, _Instance]] = []
        self.locks = False  # FOR UPDATE / FOR SHARE somewhere in it
        self.writes_rows = False  # an UPDATE or DELETE somewhere in it
        self.mutable_uses: list[str] = []  # where Citus refuses non-IMMUTABLE functions
        self.uids = itertools.count()
        self.path: list[str] = []
        # Customer tables joined to rows of no customer table, which Citus can join only
        # when those tables are pinned: (the tables, the other side, how they are joined).
        self.recurring: list[tuple[list[_Instance], _Item, str]] = []

    # -- nodes -------------------------------------------------------------------------
    def _identity(self, a: Key, b: Key) -> None:
        self.same.union(a, b)
        self.equal.union(a, b)

    def _value(self, node: Any, scope: _Scope) -> Key | None:
        """The node of an operand: a column, a parameter or a constant (else None)."""
        node = _strip(node)
        if isinstance(node, ast.ParamRef):
            key: Key = ("param", f"${node.number}")
        elif isinstance(node, ast.A_Const):
            if node.isnull:
                return None
            key = ("const", repr(node.val))
        elif isinstance(node, ast.ColumnRef):
            return self._column(node, scope)
        else:
            return None
        self.values.append(key)
        return key

    def _column(self, ref: Any, scope: _Scope) -> Key | None:
        fields = [str(f.sval) for f in ref.fields if isinstance(f, ast.String)]
        if len(fields) != len(ref.fields) or not fields:
            return None  # a star
        found = self._resolve(fields, scope)
        if found is not None:
            return found
        if fields[0] in self.variables:
            # plpgsql refuses a name that is both a variable and a column (the default
            # plpgsql.variable_conflict = error), so an unresolved variable is a parameter.
            key: Key = ("param", ".".join(fields))
            self.values.append(key)
            return key
        return None

    def _resolve(self, fields: list[str], scope: _Scope) -> Key | None:
        current: _Scope | None = scope
        crossed: list[_Scope] = []
        while current is not None:
            found = self._lookup(fields, current)
            if found is not None:
                for inner in crossed:
                    inner.correlated = True
                    inner.outer_items.append(found[0])
                return found[1]
            crossed.append(current)
            current = current.parent
        return None

    @staticmethod
    def _lookup(fields: list[str], scope: _Scope) -> tuple[_Item, Key] | None:
        if len(fields) >= 2:
            for item in scope.items:
                if item.name == fields[-2]:
                    key = item.column(fields[-1], strict=False)
                    return None if key is None else (item, key)
            return None
        for strict in (True, False):
            for item in scope.items:
                key = item.column(fields[0], strict=strict)
                if key is not None:
                    return item, key
        return None

    # -- statements ----------------------------------------------------------------------
    def read(self, stmt: Any, scope: _Scope | None = None) -> _Output:
        """Read any statement: a SELECT, INSERT, UPDATE or DELETE; anything else yields
        nothing."""
        if isinstance(stmt, ast.SelectStmt):
            return self._select(stmt, scope)
        if isinstance(stmt, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
            return self._modify(stmt, scope)
        return _Output([], [])

    def _with(self, stmt: Any, scope: _Scope) -> None:
        if stmt.withClause is None:
            return
        for cte in stmt.withClause.ctes:
            self.path.append(cte.ctename)
            out = self.read(cte.ctequery, scope)
            self.path.pop()
            if cte.aliascolnames:
                names = [n.sval for n in cte.aliascolnames]
                out = _Output(
                    [(n, k) for n, (_, k) in zip(names, out.columns, strict=False)], out.carried
                )
            scope.ctes[cte.ctename] = out

    def _select(self, stmt: Any, parent: _Scope | None) -> _Output:
        scope = _Scope(parent)
        self._with(stmt, scope)
        if stmt.lockingClause:
            self.locks = True
        if stmt.op != enums.SetOperation.SETOP_NONE:
            left = self._select(stmt.larg, scope)
            right = self._select(stmt.rarg, scope)
            columns: list[tuple[str, Key]] = []
            for (name, lk), (_, rk) in zip(left.columns, right.columns, strict=False):
                key = ("out", next(self.uids), name)
                self._identity(key, lk)
                self._identity(key, rk)
                columns.append((name, key))
            return _Output(columns, left.carried + right.carried)
        if stmt.valuesLists:
            joined = self._expressions(stmt.valuesLists, scope)
            width = len(stmt.valuesLists[0])
            columns = [(f"column{i + 1}", ("out", next(self.uids), i)) for i in range(width)]
            return _Output(columns, [i for item in joined for i in item.carried])
        joined = []
        for node in stmt.fromClause or ():
            joined.extend(self._from(node, scope))
        self._condition(stmt.whereClause, scope)
        joined += self._expressions(
            (stmt.whereClause, stmt.havingClause, stmt.targetList, stmt.sortClause,
             stmt.groupClause, stmt.limitCount, stmt.limitOffset, stmt.distinctClause),
            scope,
        )  # fmt: skip
        self._join(joined)
        columns = self._targets(stmt.targetList or (), scope)
        if self._one_row(stmt) and not scope.correlated:
            # An uncorrelated block that folds its rows into one (count(*), sum(...) without
            # GROUP BY) joins like a constant: Citus computes it first, as a subplan, and
            # joins its one row with anything; it carries no table's rows.
            return _Output(columns, [])
        return _Output(columns, [i for item in joined for i in item.carried])

    def _one_row(self, stmt: Any) -> bool:
        if stmt.groupClause or stmt.fromClause is None:
            return False
        for target in stmt.targetList or ():
            for node in _sublinks_free_walk(target.val):
                if (
                    isinstance(node, ast.FuncCall)
                    and node.over is None
                    and _function_name(node) in self.schema.aggregates
                ):
                    return True
        return False

    def _modify(self, stmt: Any, parent: _Scope | None) -> _Output:
        scope = _Scope(parent)
        self._with(stmt, scope)
        target = self._table(stmt.relation, scope)
        joined: list[_Item] = []
        if isinstance(stmt, ast.InsertStmt):
            assert target.instance is not None
            target.instance.insert_target = True
            if stmt.selectStmt is not None:
                self.read(stmt.selectStmt, scope)
            if stmt.onConflictClause is not None:
                self._expressions(
                    (stmt.onConflictClause.targetList, stmt.onConflictClause.whereClause), scope
                )
        else:
            self.writes_rows = True
            joined.append(target)
            extra = stmt.fromClause if isinstance(stmt, ast.UpdateStmt) else stmt.usingClause
            for node in extra or ():
                joined.extend(self._from(node, scope))
            self._condition(stmt.whereClause, scope)
            sets = stmt.targetList if isinstance(stmt, ast.UpdateStmt) else None
            joined += self._expressions((stmt.whereClause, sets), scope)
        self._join(joined)
        returning = stmt.returningClause.exprs if stmt.returningClause else ()
        self._expressions(returning, scope)
        assert target.instance is not None
        if target.instance.placement is not None:
            for fn in self._mutable(returning):
                self.mutable_uses.append(f"{fn} in RETURNING of {target.instance.label}")
            # Finding 3: Citus evaluates an UPDATE's or DELETE's non-IMMUTABLE functions on
            # the coordinator before it sends the statement, which it cannot do inside CASE
            # or COALESCE (eligibility.mark is refused so). An INSERT's VALUES it evaluates
            # whole (outbox.insert's coalesce(..., txid_current()) runs, with the
            # coordinator's txid).
            written = (
                (stmt.targetList if isinstance(stmt, ast.UpdateStmt) else None, stmt.whereClause)
                if not isinstance(stmt, ast.InsertStmt)
                else ()
            )
            for node in _sublinks_free_walk(written):
                if isinstance(node, ast.CaseExpr | ast.CoalesceExpr):
                    kind = "CASE" if isinstance(node, ast.CaseExpr) else "COALESCE"
                    for fn in self._mutable(node):
                        self.mutable_uses.append(
                            f"{fn} in {kind} of a write to {target.instance.label}"
                        )
        columns = self._targets(returning, scope)
        carried = [target.instance] if target.instance.placement == "customer" else []
        return _Output(columns, carried)

    def _mutable(self, node: Any) -> Iterator[str]:
        """The non-IMMUTABLE functions an expression calls (current_date included)."""
        for part in _walk(node):
            if isinstance(part, ast.FuncCall):
                fn = _function_name(part)
                if fn in self.schema.mutable_functions:
                    yield f"{fn}()"
            elif isinstance(part, ast.SQLValueFunction):
                yield _sql_value_name(part)

    # -- FROM ----------------------------------------------------------------------------
    def _table(self, rv: Any, scope: _Scope) -> _Item:
        alias = rv.alias.aliasname if rv.alias else rv.relname
        cte = scope.cte(rv.relname) if rv.schemaname is None else None
        if cte is not None:
            item = _Item(alias, derived=dict(cte.columns), carried=list(cte.carried))
        else:
            local = rv.schemaname not in (None, "public")
            table = f"{rv.schemaname}.{rv.relname}" if local else rv.relname
            placement, column = (
                (None, None) if local else self.schema.distributed.get(table, (None, None))
            )
            path = "".join(f"{p}/" for p in self.path)
            instance = _Instance(next(self.uids), table, alias, placement, column, path=path)
            self.instances.append(instance)
            known = self.schema.columns.get(table)
            item = _Item(alias, instance, known_columns=known)
            if placement == "customer":
                item.carried = [instance]
        scope.items.append(item)
        return item

    def _from(self, node: Any, scope: _Scope) -> list[_Item]:
        """Register a FROM entry; return its leaves (each a side of the block's join)."""
        if isinstance(node, ast.RangeVar):
            return [self._table(node, scope)]
        if isinstance(node, ast.JoinExpr):
            left = self._from(node.larg, scope)
            right = self._from(node.rarg, scope)
            for name in node.usingClause or ():
                keys = [self._lookup([name.sval], _Scope(None, side)) for side in (left, right)]
                if keys[0] is not None and keys[1] is not None:
                    self.equal.union(keys[0][1], keys[1][1])
            self._condition(node.quals, scope)
            # Finding 7: an outer join from rows of no customer table (a function, a CTE's
            # result, a reference table) to a customer table makes Citus compute the customer
            # side first, as a subplan on the coordinator: the whole table unless pinned.
            kind = node.jointype
            if kind in (enums.JoinType.JOIN_LEFT, enums.JoinType.JOIN_RIGHT):
                kept, nullable = (
                    (left, right) if kind == enums.JoinType.JOIN_LEFT else (right, left)
                )
                for outer in kept:
                    if not outer.carried:
                        # A subquery on that side is computed with its own filters; a
                        # bare table is pulled whole unless pinned.
                        bare = [item.instance for item in nullable if item.instance]
                        inner = [i for i in bare if i.placement == "customer"]
                        self.recurring.append((inner, outer, "outer-joined from"))
            return left + right + self._expressions(node.quals, scope)
        if isinstance(node, ast.RangeSubselect):
            sub: Any = node  # pglast types every field Optional; the parser sets these
            # LATERAL: the subquery reads the items before it, so it sees this scope.
            self.path.append(sub.alias.aliasname)
            inner_scope = _Scope(scope)
            out = self.read(sub.subquery, inner_scope)
            self.path.pop()
            self._correlated(out.carried, inner_scope)
            names = [n.sval for n in sub.alias.colnames] if sub.alias.colnames else None
            cols = (
                out.columns
                if names is None
                else list(zip(names, (k for _, k in out.columns), strict=False))
            )
            item = _Item(sub.alias.aliasname, derived=dict(cols), carried=out.carried)
            scope.items.append(item)
            return [item]
        if isinstance(node, ast.RangeFunction):
            self._expressions(node.functions, scope)
            alias = node.alias.aliasname if node.alias else None
            if node.alias and node.alias.colnames:
                names = [n.sval for n in node.alias.colnames]
            elif node.coldeflist:
                names = [c.colname for c in node.coldeflist]
            else:
                functions: Any = node.functions
                names = [alias or _function_name(functions[0][0])]
            uid = next(self.uids)
            item = _Item(alias or names[0], derived={n: ("out", uid, n) for n in names})
            scope.items.append(item)
            return [item]
        return []

    # -- expressions ---------------------------------------------------------------------
    def _condition(self, node: Any, scope: _Scope) -> None:
        """Record what the AND-ed parts of a WHERE or ON say: equalities, ANY filters."""
        for part in _conjuncts(node):
            if isinstance(part, ast.A_Expr) and _op_name(part) == "=":
                kind = part.kind
                if kind == enums.A_Expr_Kind.AEXPR_OP:
                    lhs, rhs = _strip(part.lexpr), _strip(part.rexpr)
                    if isinstance(lhs, ast.RowExpr) and isinstance(rhs, ast.RowExpr):
                        pairs = list(zip(lhs.args or (), rhs.args or (), strict=False))
                    else:
                        pairs = [(lhs, rhs)]
                    for a, b in pairs:
                        ka, kb = self._value(a, scope), self._value(b, scope)
                        if ka is not None and kb is not None:
                            self.equal.union(ka, kb)
                elif kind in (enums.A_Expr_Kind.AEXPR_OP_ANY, enums.A_Expr_Kind.AEXPR_IN):
                    self._any(part, scope)

    def _any(self, part: Any, scope: _Scope) -> None:
        """`col = ANY($n)` / `col IN ($1, $2)`: a filter to a set of values."""
        column = self._value(part.lexpr, scope)
        rhs = _strip(part.rexpr)
        elements = (
            rhs
            if isinstance(rhs, tuple)
            else (rhs.elements if isinstance(rhs, ast.A_ArrayExpr) else (rhs,))
        )
        values = [self._value(e, scope) for e in elements or ()]
        if column is None or not values or any(v is None or v[0] == "col" for v in values):
            return
        if len(values) == 1 and isinstance(rhs, tuple):
            self.equal.union(column, values[0])  # type: ignore[arg-type]
        else:
            self.any_filtered.append(column)

    def _expressions(self, node: Any, scope: _Scope) -> list[_Item]:
        """Read the sublinks of expressions; return those that join the block: a correlated
        one (a nested loop over the block's rows) or an IN / = ANY (a semi-join). An
        uncorrelated EXISTS, scalar or ARRAY subquery runs once on its own (Citus plans it
        as a separate subplan), so it joins nothing."""
        joined = []
        clauses = node if isinstance(node, tuple | list) else (node,)
        semi = {
            id(part): part
            for clause in clauses
            for part in _conjuncts(clause)
            if isinstance(part, ast.SubLink)
            and part.subLinkType == enums.SubLinkType.ANY_SUBLINK
            and _op_name(part) == "="
        }
        for link in _sublinks(node):
            inner = _Scope(scope)
            out = self.read(link.subselect, inner)
            self._correlated(out.carried, inner)
            is_in = link.subLinkType == enums.SubLinkType.ANY_SUBLINK
            if id(link) in semi and out.columns:
                key = self._value(link.testexpr, scope)
                if key is not None:
                    self.equal.union(key, out.columns[0][1])
            if is_in or inner.correlated:
                joined.append(_Item("(subquery)", derived={}, carried=out.carried, sublink=True))
        return joined

    def _correlated(self, carried: list[_Instance], inner: _Scope) -> None:
        # A subquery correlated to rows of no customer table (a function such as unnest, a
        # reference table, VALUES): Citus refuses it ("correlated subqueries are not supported
        # when the FROM clause contains a set returning function / a reference table") unless
        # the whole statement routes to one shard.
        for outer in inner.outer_items:
            if not outer.carried:
                self.recurring.append((carried, outer, "correlated to"))

    def _targets(self, targets: Iterable[Any], scope: _Scope) -> list[tuple[str, Key]]:
        columns: list[tuple[str, Key]] = []
        for target in targets:
            value: Any = _strip(target.val)
            fields: Any = value.fields if isinstance(value, ast.ColumnRef) else None
            if fields is not None and isinstance(fields[-1], ast.A_Star):
                qualifier = [f.sval for f in fields[:-1]]
                for item in scope.items:
                    if not qualifier or item.name == qualifier[-1]:
                        columns.extend(item.all_columns())
                continue
            if target.name:
                name = target.name
            elif fields is not None:
                name = str(fields[-1].sval)
            elif isinstance(value, ast.FuncCall):
                name = _function_name(value)
            else:
                name = "?column?"
            key: Key = ("out", next(self.uids), name)
            source = self._value(value, scope) if isinstance(value, ast.ColumnRef) else None
            if source is not None:
                self._identity(key, source)
            columns.append((name, key))
        return columns

    def _join(self, items: list[_Item]) -> None:
        # Checked once the statement is read: an equality may come later (an outer WHERE).
        # Two subqueries of one block's expressions are each joined with its FROM items,
        # not with each other.
        for a, b in itertools.combinations(items, 2):
            if a.sublink and b.sublink:
                continue
            for x in a.carried:
                for y in b.carried:
                    if x is not y:
                        self.pairs.append((x, y))

    # -- rules ---------------------------------------------------------------------------
    def violations(self) -> set[Violation]:
        found: set[Violation] = set()
        valued = {self.equal.find(v) for v in self.values}
        filtered = {(self.equal if ANY_CARRIES_ACROSS_EQUALITY else self.same).find(k)
                    for k in self.any_filtered}  # fmt: skip
        # R1: a join of two customer tables names one customer on both sides; else Citus
        # cannot run it on the shards (it refuses, or pulls one side to the coordinator).
        # One violation per missing link: once x-y is reported, y-z is not reported again
        # through x-z (the tables of one join reported as a spanning tree, in join order).
        reported = _UnionFind()
        for x, y in self.pairs:
            assert x.column is not None and y.column is not None
            rx, ry = self.equal.find(x.key(x.column)), self.equal.find(y.key(y.column))
            if rx != ry and reported.find(rx) != reported.find(ry):
                reported.union(rx, ry)
                a, b = sorted((x.label, y.label))
                found.add(Violation("R1", self.name, f"{a} x {b}"))

        def pinned(inst: _Instance) -> bool:
            assert inst.column is not None
            key = inst.key(inst.column)
            if self.equal.find(key) in valued:
                return True
            if ANY_CARRIES_ACROSS_EQUALITY:
                return self.equal.find(key) in filtered
            return self.same.find(key) in filtered

        for tables, outer, how in self.recurring:
            for inst in tables:
                if not pinned(inst):
                    found.add(
                        Violation(
                            "R1", self.name, f"{inst.label} {how} {outer.name} (no customer table)"
                        )
                    )
        # R2: Citus takes row locks only in a statement that routes to one shard: every
        # distributed table it reads is pinned to the shard's customers (or one value).
        if self.locks:
            for inst in self.instances:
                if inst.column is None or inst.insert_target:
                    continue
                if not pinned(inst):
                    found.add(
                        Violation("R2", self.name, f"{inst.label} not pinned by {inst.column}")
                    )
        return found


def check_statement(
    name: str, sql: str, schema: Schema, variables: Iterable[str] = ()
) -> set[Violation]:
    """The violations of R1, R2 and R3 in one SQL text (one or more statements)."""
    found: set[Violation] = set()
    for raw in parse_sql(sql):
        stmt = _Statement(name, schema, frozenset(variables))
        stmt.read(raw.stmt)
        found |= stmt.violations()
        # R3 (report only): nextval in a routed statement breaks its routing (finding 2);
        # Citus refuses non-IMMUTABLE functions in RETURNING of a distributed write (3).
        if stmt.locks or stmt.writes_rows:
            for node in _walk(raw.stmt):
                if isinstance(node, ast.FuncCall) and _function_name(node) == "nextval":
                    found.add(Violation("R3", name, "nextval() in a statement that locks rows"))
        for use in stmt.mutable_uses:
            found.add(Violation("R3", name, use))
        # R3: a function that touches distributed tables is plpgsql (finding 4: Citus plans
        # no LANGUAGE sql one with parameters) and runs as a statement of its own (finding 8:
        # inside a routed statement it would run on the worker, nested).
        reads_tables = any(inst.placement is not None for inst in stmt.instances)
        for node in _walk(raw.stmt):
            if isinstance(node, ast.FuncCall):
                fn = _function_name(node)
                language = schema.table_functions.get(fn)
                if language == "sql":
                    found.add(Violation("R3", name, f"calls {fn}(), LANGUAGE sql on tables"))
                elif language is not None and reads_tables:
                    found.add(Violation("R3", name, f"calls {fn}() inside a statement on tables"))
    return found


def _touches(sql: str, schema: Schema, variables: Iterable[str]) -> tuple[bool, set[str]]:
    """Whether a SQL text names a distributed table, and the functions it calls."""
    names = frozenset(variables)
    touches, calls = False, set()
    for raw in parse_sql(sql):
        stmt = _Statement("", schema, names)
        stmt.read(raw.stmt)
        touches |= any(inst.placement is not None for inst in stmt.instances)
        calls |= {_function_name(n) for n in _walk(raw.stmt) if isinstance(n, ast.FuncCall)}
    return touches, calls


def functions_touching_tables(
    functions: Iterable[tuple[str, str, str, Iterable[str]]], schema: Schema
) -> dict[str, str]:
    """Of (name, language, body, argument names) as check_function takes them, the functions
    that touch a distributed table, themselves or through a function they call: name ->
    language."""
    direct: dict[str, tuple[str, bool, set[str]]] = {}
    for name, language, body, arguments in functions:
        if language == "sql":
            touches, calls = _touches(body, schema, arguments)
        else:
            touches, calls = False, set()
            statements, variables, _ = plpgsql_statements(body)
            for sql in statements:
                t, c = _touches(sql, schema, variables)
                touches, calls = touches or t, calls | c
        direct[name] = (language, touches, calls)
    found = {name: lang for name, (lang, touches, _) in direct.items() if touches}
    grown = True
    while grown:  # through calls, until nothing is added
        grown = False
        for name, (lang, _, calls) in direct.items():
            if name not in found and calls & found.keys():
                found[name] = lang
                grown = True
    return found


# -- function bodies ---------------------------------------------------------------------

# PLpgSQL_expr parse modes (PostgreSQL's RawParseMode): a whole statement, a type name, an
# expression, an assignment `target := expression`.
_PARSE_DEFAULT, _PARSE_TYPE, _PARSE_EXPR = 0, 1, 2


def plpgsql_statements(definition: str) -> tuple[list[str], set[str], bool]:
    """The SQL texts of a plpgsql function (pg_get_functiondef's text), its variables, and
    whether it runs dynamic SQL (EXECUTE, which no static check can read)."""
    tree: Any = parse_plpgsql(definition)
    statements: list[str] = []
    variables: set[str] = {"new", "old"}
    dynamic = "PLpgSQL_stmt_dynexecute" in json.dumps(tree)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            expr = node.get("PLpgSQL_expr")
            if isinstance(expr, dict):
                query, mode = expr["query"], expr.get("parseMode", _PARSE_DEFAULT)
                if mode == _PARSE_DEFAULT:
                    statements.append(query)
                elif mode == _PARSE_EXPR:
                    statements.append(f"SELECT {query}")
                elif mode != _PARSE_TYPE:
                    statements.append(f"SELECT {query.split(':=', 1)[-1]}")
            for kind in ("PLpgSQL_var", "PLpgSQL_rec", "PLpgSQL_row"):
                datum = node.get(kind)
                if isinstance(datum, dict) and "refname" in datum:
                    variables.add(datum["refname"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(tree)
    return statements, variables, dynamic


def check_function(
    name: str, language: str, body: str, arguments: Iterable[str], schema: Schema
) -> set[Violation]:
    """The violations in a function's statements: a LANGUAGE sql body (``prosrc``, with its
    argument names) or a plpgsql definition (``pg_get_functiondef``)."""
    if language == "sql":
        return check_statement(name, body, schema, arguments)
    statements, variables, dynamic = plpgsql_statements(body)
    found = {Violation("R0", name, "dynamic SQL (EXECUTE) is not checked")} if dynamic else set()
    for sql in statements:
        found |= check_statement(name, sql, schema, variables)
    return found
