"""The Confluent-compatible registry's REST semantics (in-process, no socket)."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

with warnings.catch_warnings():  # starlette deprecates httpx for its TestClient
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from hosepipe.registry_server import CONTENT_TYPE, create_app
from schemas import CANONICAL_EVENT, load_schema

SCHEMA = load_schema(CANONICAL_EVENT)


def body(schema: dict[str, Any]) -> dict[str, str]:
    return {"schema": json.dumps(schema)}


def test_register_is_idempotent_and_ids_are_global() -> None:
    client = TestClient(create_app())
    first = client.post("/subjects/a-value/versions", json=body(SCHEMA))
    assert first.status_code == 200 and first.headers["content-type"].startswith(CONTENT_TYPE)
    again = client.post("/subjects/a-value/versions", json=body(SCHEMA))
    other_subject = client.post("/subjects/b-value/versions", json=body(SCHEMA))
    assert first.json()["id"] == again.json()["id"] == other_subject.json()["id"]
    assert client.get("/subjects").json() == ["a-value", "b-value"]
    assert client.get("/subjects/a-value/versions").json() == [1]
    fetched = client.get(f"/schemas/ids/{first.json()['id']}").json()
    assert json.loads(fetched["schema"]) == SCHEMA


def test_versions_lookup_and_latest() -> None:
    client = TestClient(create_app())
    v2 = copy.deepcopy(SCHEMA)
    v2["fields"].append({"name": "tenant", "type": "string", "default": ""})
    id1 = client.post("/subjects/s/versions", json=body(SCHEMA)).json()["id"]
    id2 = client.post("/subjects/s/versions", json=body(v2)).json()["id"]
    assert id1 != id2
    latest = client.get("/subjects/s/versions/latest").json()
    assert latest["version"] == 2 and latest["id"] == id2
    found = client.post("/subjects/s", json=body(SCHEMA)).json()
    assert found["version"] == 1 and found["id"] == id1


def test_incompatible_schema_is_rejected_unless_compatibility_is_none() -> None:
    client = TestClient(create_app())
    client.post("/subjects/s/versions", json=body(SCHEMA))
    broken = copy.deepcopy(SCHEMA)
    broken["fields"].append({"name": "tenant", "type": "string"})  # no default
    refused = client.post("/subjects/s/versions", json=body(broken))
    assert refused.status_code == 409
    assert "tenant: field added without a default" in refused.json()["message"]
    assert client.put("/config/s", json={"compatibility": "NONE"}).json() == {
        "compatibility": "NONE"
    }
    assert client.post("/subjects/s/versions", json=body(broken)).status_code == 200
    assert client.get("/config").json() == {"compatibilityLevel": "BACKWARD"}


def test_errors_use_confluent_error_codes() -> None:
    client = TestClient(create_app())
    assert client.get("/schemas/ids/5").json()["error_code"] == 40403
    assert client.get("/subjects/nope/versions").json()["error_code"] == 40401
    client.post("/subjects/s/versions", json=body(SCHEMA))
    assert client.get("/subjects/s/versions/9").json()["error_code"] == 40402
    assert client.post("/subjects/s/versions", json={"schema": "{"}).status_code == 422


def test_state_survives_a_restart_with_a_store(tmp_path: Path) -> None:
    store = tmp_path / "registry.json"
    schema_id = (
        TestClient(create_app(store)).post("/subjects/s/versions", json=body(SCHEMA)).json()["id"]
    )
    again = TestClient(create_app(store))
    assert json.loads(again.get(f"/schemas/ids/{schema_id}").json()["schema"]) == SCHEMA
