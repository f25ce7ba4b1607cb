"""The app's routes, the role table (``gateway.intake.http.roles``) and the OpenAPI description
are one list: no route exists that the table does not name (issue 13: Flask's default static
route served the working directory without a token), and every table entry is served."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flask import Flask

from gateway.intake.http.ops import OPENAPI
from gateway.intake.http.roles import PAGES, ROUTES
from gateway.persistence.tokens import Role
from tests.service_helpers import make_app

IMPLICIT = {"HEAD", "OPTIONS"}


def shape(path: str) -> str:
    """Parameter names differ (``<resource_type>`` vs ``{type}``): compare the shape only."""
    return re.sub(r"\{[^}]*\}", "{}", re.sub(r"<(?:[^:>]+:)?[^>]+>", "{}", path))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    import os

    os.environ.setdefault("DEID_GATEWAY_KEY", "routes-test-key-" + "0123456789abcdef" * 2)
    return make_app(tmp_path_factory.mktemp("routes") / "data")


def served(app: Flask) -> dict[tuple[str, str], frozenset[Role] | None]:
    out: dict[tuple[str, str], frozenset[Role] | None] = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - IMPLICIT):
            out[(method, shape(rule.rule))] = getattr(view, "required_roles", None)
    return out


def test_every_route_is_in_the_role_table_with_the_same_roles(app: Flask) -> None:
    table = {(m, shape(p)): roles for (m, p), roles in {**ROUTES, **PAGES}.items()}
    assert served(app) == table


def test_openapi_paths_and_roles_are_the_role_table() -> None:
    document = json.loads(Path(OPENAPI).read_text(encoding="utf-8"))
    described = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            described[(method.upper(), path)] = operation
    assert set(described) == set(ROUTES)
    for key, operation in described.items():
        roles = ROUTES[key]
        if roles is None:
            assert "security" not in operation, key
            assert operation["x-roles"] == [], key
        else:
            assert operation["security"] == [{"bearer": []}], key
            assert set(operation["x-roles"]) == {r.value for r in roles} | {"admin"}, key
        for name in re.findall(r"\{([^}]+)\}", key[1]):
            assert name in {p["name"] for p in operation.get("parameters", [])}, (key, name)


def test_no_static_route(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/static/README.md").status_code == 404
    assert client.get("/README.md").status_code == 404
