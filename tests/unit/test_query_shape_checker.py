"""The checker of tests/query_shape.py on small statements: what each rule passes and fails."""

from __future__ import annotations

import dataclasses

import pytest

from tests.query_shape import (
    Schema,
    Violation,
    check_function,
    check_statement,
    functions_touching_tables,
)

SCHEMA = Schema(
    distributed={
        "customers": ("customer", "id"),
        "leases": ("customer", "customer_id"),
        "installments": ("customer", "customer_id"),
        "money_movements": ("customer", "customer_id"),
        "customer_emails": ("value", "email"),
    },
    columns={
        "customers": frozenset({"id", "email"}),
        "leases": frozenset({"id", "customer_id", "status"}),
        "installments": frozenset({"id", "lease_id", "customer_id", "status", "due_on"}),
        "money_movements": frozenset({"id", "installment_id", "customer_id", "kind"}),
        "customer_emails": frozenset({"email", "customer_id"}),
        "collection_runs": frozenset({"id", "status"}),
    },
)


def found(sql: str, variables: tuple[str, ...] = ()) -> list[str]:
    return sorted(str(v) for v in check_statement("q", sql, SCHEMA, variables))


def test_a_co_located_join_passes() -> None:
    assert (
        found(
            "SELECT * FROM installments i JOIN leases l"
            " ON l.id = i.lease_id AND l.customer_id = i.customer_id"
        )
        == []
    )


def test_a_join_on_the_lease_alone_fails() -> None:
    assert found("SELECT * FROM installments i JOIN leases l ON l.id = i.lease_id") == [
        "R1 q: i(installments) x l(leases)"
    ]


def test_a_comma_join_with_where_is_a_join() -> None:
    assert found("SELECT 1 FROM installments i, leases l WHERE l.id = i.lease_id") == [
        "R1 q: i(installments) x l(leases)"
    ]
    assert (
        found(
            "SELECT 1 FROM installments i, leases l"
            " WHERE l.id = i.lease_id AND l.customer_id = i.customer_id"
        )
        == []
    )


def test_a_chain_of_equalities_passes() -> None:
    assert (
        found(
            "SELECT 1 FROM installments i JOIN leases l ON l.id = i.lease_id"
            " JOIN money_movements m ON m.installment_id = i.id"
            " WHERE i.customer_id = l.customer_id AND l.customer_id = m.customer_id"
        )
        == []
    )


def test_two_tables_pinned_to_one_parameter_are_co_located() -> None:
    assert (
        found(
            "SELECT 1 FROM installments i JOIN leases l ON l.id = i.lease_id"
            " WHERE i.customer_id = $1 AND l.customer_id = $1"
        )
        == []
    )


def test_an_equality_under_or_proves_nothing() -> None:
    assert found(
        "SELECT 1 FROM installments i JOIN leases l ON l.id = i.lease_id"
        " WHERE i.customer_id = l.customer_id OR i.status = 'paid'"
    ) == ["R1 q: i(installments) x l(leases)"]


def test_customers_join_on_their_id() -> None:
    assert found("SELECT 1 FROM customers c JOIN leases l ON l.customer_id = c.id") == []


def test_a_join_with_a_reference_table_needs_nothing() -> None:
    assert found("SELECT 1 FROM installments i JOIN collection_runs r ON r.id = i.id") == []


def test_a_cte_is_joined_through_its_columns() -> None:
    base = (
        "WITH d AS (SELECT m.installment_id, m.customer_id FROM money_movements m)"
        " UPDATE installments i SET status = 'paid' FROM d WHERE i.id = d.installment_id"
    )
    assert found(base) == ["R1 q: d/m(money_movements) x i(installments)"]
    assert found(base + " AND i.customer_id = d.customer_id") == []


def test_a_lateral_subquery_is_a_join() -> None:
    sql = (
        "SELECT * FROM installments i CROSS JOIN LATERAL"
        " (SELECT count(*) FROM money_movements m WHERE m.installment_id = i.id{}) j"
    )
    assert found(sql.format("")) == ["R1 q: i(installments) x j/m(money_movements)"]
    assert found(sql.format(" AND m.customer_id = i.customer_id")) == []


def test_a_correlated_exists_is_a_join_and_an_uncorrelated_one_is_not() -> None:
    assert found(
        "SELECT 1 FROM installments i WHERE EXISTS"
        " (SELECT 1 FROM money_movements m WHERE m.installment_id = i.id)"
    ) == ["R1 q: i(installments) x m(money_movements)"]
    assert (
        found("SELECT 1 FROM installments i WHERE EXISTS (SELECT 1 FROM money_movements m)") == []
    )


def test_in_a_subquery_is_a_semi_join() -> None:
    assert found(
        "SELECT 1 FROM installments i WHERE i.id IN (SELECT m.installment_id FROM money_movements m)"
    ) == ["R1 q: i(installments) x m(money_movements)"]
    assert (
        found(
            "SELECT 1 FROM installments i"
            " WHERE (i.id, i.customer_id) = (1, 2)"
            " AND i.customer_id IN (SELECT m.customer_id FROM money_movements m)"
        )
        == []
    )


def test_unqualified_columns_resolve_through_the_catalog() -> None:
    assert (
        found(
            "SELECT 1 FROM installments i JOIN money_movements m ON installment_id = i.id"
            " WHERE kind = 'settled' AND m.customer_id = i.customer_id"
        )
        == []
    )


def test_for_update_with_any_on_every_table_passes() -> None:
    assert (
        found(
            "SELECT i.id FROM installments i JOIN leases l"
            " ON l.id = i.lease_id AND l.customer_id = i.customer_id"
            " WHERE i.customer_id = ANY ($1::bigint[]) AND l.customer_id = ANY ($1::bigint[])"
            " FOR UPDATE OF i SKIP LOCKED"
        )
        == []
    )


def test_for_update_without_a_customer_filter_fails() -> None:
    assert found("SELECT id FROM installments WHERE status = 'scheduled' FOR UPDATE") == [
        "R2 q: installments not pinned by customer_id"
    ]


def test_any_is_not_carried_across_a_join_equality() -> None:
    # Finding 1: Citus carries `= $1` across a join's equality, never `= ANY($1)`.
    sql = (
        "SELECT i.id FROM installments i JOIN leases l"
        " ON l.id = i.lease_id AND l.customer_id = i.customer_id"
        " WHERE i.customer_id {} FOR SHARE"
    )
    assert found(sql.format("= ANY ($1::bigint[])")) == [
        "R2 q: l(leases) not pinned by customer_id"
    ]
    assert found(sql.format("= $1")) == []


def test_an_any_filter_reaches_the_table_through_a_subquery_column() -> None:
    assert (
        found(
            "SELECT * FROM (SELECT i.id, i.customer_id FROM installments i) s"
            " WHERE s.customer_id = ANY ($1) FOR UPDATE"
        )
        == []
    )


def test_a_lookup_table_is_pinned_by_its_value() -> None:
    assert found("SELECT customer_id FROM customer_emails WHERE email = $1 FOR UPDATE") == []
    assert found("SELECT email FROM customer_emails WHERE customer_id = $1 FOR UPDATE") == [
        "R2 q: customer_emails not pinned by email"
    ]


def test_a_lock_in_a_cte_covers_the_whole_statement() -> None:
    assert found(
        "WITH c AS (SELECT id FROM installments WHERE customer_id = ANY ($1) FOR UPDATE)"
        " UPDATE installments i SET status = 'processing' FROM c WHERE i.id = c.id"
    ) == [
        "R1 q: c/installments x i(installments)",
        "R2 q: i(installments) not pinned by customer_id",
    ]


def test_r3_reports_nextval_in_a_locking_statement_and_now_in_returning() -> None:
    assert found(
        "UPDATE installments SET status = 'paid' WHERE customer_id = $1"
        " RETURNING id, now(), current_date, nextval('s')"
    ) == [
        "R3 q: current_date in RETURNING of installments",
        "R3 q: nextval() in RETURNING of installments",
        "R3 q: nextval() in a statement that locks rows",
        "R3 q: now() in RETURNING of installments",
    ]
    assert found("INSERT INTO collection_runs (status) VALUES ('x') RETURNING now()") == []


def test_r3_reports_now_in_case_or_coalesce_of_a_write() -> None:
    assert found(
        "UPDATE installments SET due_on = CASE WHEN status = 'x' THEN now() END,"
        " status = coalesce($2, status), lease_id = 1 WHERE customer_id = $1"
    ) == ["R3 q: now() in CASE of a write to installments"]
    assert found("UPDATE installments SET due_on = now() WHERE customer_id = $1") == []


def test_plpgsql_variables_are_parameters() -> None:
    body = """CREATE FUNCTION f(p_customer bigint) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE v_id bigint;
    BEGIN
        SELECT id INTO v_id FROM installments WHERE customer_id = p_customer FOR UPDATE;
        IF EXISTS (SELECT 1 FROM leases l JOIN installments i ON i.lease_id = l.id) THEN
            v_id := 1;
        END IF;
        UPDATE leases SET status = 'paid_off' WHERE id = v_id;
    END $$"""
    assert sorted(str(v) for v in check_function("f", "plpgsql", body, (), SCHEMA)) == [
        "R1 f: i(installments) x l(leases)"
    ]


def test_dynamic_sql_is_reported_as_unchecked() -> None:
    body = """CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$
    BEGIN EXECUTE 'SELECT 1'; END $$"""
    assert check_function("f", "plpgsql", body, (), SCHEMA) == {
        Violation("R0", "f", "dynamic SQL (EXECUTE) is not checked")
    }


@pytest.mark.parametrize("lock", ["FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE"])
def test_every_lock_strength_counts(lock: str) -> None:
    assert found(f"SELECT id FROM leases WHERE status = 'active' {lock} SKIP LOCKED") == [
        "R2 q: leases not pinned by customer_id"
    ]


def test_two_scalar_subqueries_of_one_select_are_not_joined_with_each_other() -> None:
    assert (
        found(
            "SELECT (SELECT count(*) FROM installments i WHERE i.lease_id = l.id"
            "        AND i.customer_id = l.customer_id),"
            "       (SELECT count(*) FROM money_movements m WHERE m.customer_id = l.customer_id)"
            " FROM leases l"
        )
        == []
    )


def test_a_one_row_aggregate_joins_like_a_constant() -> None:
    assert (
        found(
            "WITH n AS (SELECT count(*) AS n FROM money_movements)"
            " SELECT i.id, n.n FROM installments i, n"
        )
        == []
    )
    # Correlated, it is one row per outer row: a join.
    assert found(
        "SELECT i.id, t.n FROM installments i CROSS JOIN LATERAL"
        " (SELECT count(*) AS n FROM money_movements m WHERE m.installment_id = i.id) t"
    ) == ["R1 q: i(installments) x t/m(money_movements)"]


def test_a_subquery_correlated_to_a_function_runs_only_when_pinned() -> None:
    # Citus: "correlated subqueries are not supported when the FROM clause contains a set
    # returning function" (or a reference table), unless the statement routes to one shard.
    sql = (
        "SELECT ids.id, j.n FROM unnest($1::bigint[]) AS ids(id) CROSS JOIN LATERAL"
        " (SELECT count(*) AS n FROM money_movements m WHERE m.installment_id = ids.id{}) j"
    )
    assert found(sql.format("")) == [
        "R1 q: j/m(money_movements) correlated to ids (no customer table)"
    ]
    assert found(sql.format(" AND m.customer_id = ANY ($2::bigint[])")) == []
    assert found(
        "SELECT count(*) FROM collection_runs r"
        " WHERE EXISTS (SELECT 1 FROM installments i WHERE i.id = r.id)"
    ) == ["R1 q: i(installments) correlated to r (no customer table)"]


def test_an_outer_join_from_a_function_to_a_table_runs_only_when_pinned() -> None:
    # Finding 7: Citus computes the table first, on the coordinator: all of it.
    sql = (
        "SELECT * FROM unnest($1::bigint[]) AS e(id)"
        " LEFT JOIN money_movements m ON m.installment_id = e.id{}"
    )
    assert found(sql.format("")) == [
        "R1 q: m(money_movements) outer-joined from e (no customer table)"
    ]
    assert found(sql.format(" AND m.customer_id = $2")) == []


def test_functions_on_tables_are_plpgsql_and_called_on_their_own() -> None:
    functions = [
        ("balance", "sql", "SELECT sum(amount_cents) FROM installments WHERE lease_id = $1", ()),
        ("twice", "sql", "SELECT 2 * $1", ()),
        (
            "apply",
            "plpgsql",
            "CREATE FUNCTION apply(p bigint) RETURNS void LANGUAGE plpgsql AS $$"
            " BEGIN PERFORM balance(p); END $$",
            (),
        ),
    ]
    touching = functions_touching_tables(functions, SCHEMA)
    assert touching == {"balance": "sql", "apply": "plpgsql"}
    schema = dataclasses.replace(SCHEMA, table_functions=touching)

    def calls(sql: str) -> list[str]:
        return sorted(str(v) for v in check_statement("q", sql, schema))

    assert calls("SELECT apply($1), twice($2)") == []
    assert calls("SELECT balance($1)") == ["R3 q: calls balance(), LANGUAGE sql on tables"]
    assert calls("SELECT apply(l.id) FROM leases l WHERE l.customer_id = $1") == [
        "R3 q: calls apply() inside a statement on tables"
    ]
