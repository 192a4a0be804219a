"""The ``dsn`` fixture hands every test a fresh, private store on each backend."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from conftest import with_query_param, without_query_param


def test_dsn_is_private_to_the_test(dsn: str, backend: str, tmp_path: Path) -> None:
    if backend in ("sqlite", "turso"):
        assert dsn == f"{backend}://{tmp_path}/t.db"
        assert not (tmp_path / "t.db").exists()
    else:
        (schema,) = parse_qs(urlsplit(dsn).query)["schema"]
        assert schema.startswith("t_")
        assert len(schema) == len("t_") + 12


def test_query_param_helpers_keep_other_parameters() -> None:
    base = "postgresql://u@h:5432/db?sslmode=disable"
    dsn = with_query_param(base, "schema", "t_x")
    assert dsn == "postgresql://u@h:5432/db?sslmode=disable&schema=t_x"
    assert with_query_param(dsn, "schema", "t_y").endswith("schema=t_y")
    assert without_query_param(dsn, "schema") == base
