"""The PostgreSQL ledger executor's own pieces (its behaviour is tested through the ledger
on a real PostgreSQL in tests/ledger and tests/db/test_tx.py)."""

from __future__ import annotations

from minitoolai.db.pg_ledger import _rowcount, numbered


def test_named_parameters_become_numbered_once_each():
    sql, names = numbered("UPDATE a SET held = held + :amount WHERE id = :id"
                          " AND balance - held >= :amount AND t < :now::timestamptz"
                          " AND k IN (:id0, :id10)")
    assert sql == ("UPDATE a SET held = held + $1 WHERE id = $2 AND balance - held >= $1"
                   " AND t < $3::timestamptz AND k IN ($4, $5)")
    assert names == ("amount", "id", "now", "id0", "id10")
    assert numbered("SELECT 1") == ("SELECT 1", ())


def test_command_tags_give_row_counts():
    assert _rowcount("UPDATE 1") == 1
    assert _rowcount("DELETE 0") == 0
    assert _rowcount("INSERT 0 3") == 3
    assert _rowcount("BEGIN") == 0
