"""Auth (API keys, JWT HS256/RS256), depth/cost/first limits, introspection, error masking."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from gql.transport.exceptions import TransportQueryError
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from sqlalchemy import text

from tests.integration.api.api_support import run

pytestmark = pytest.mark.integration

KEY = "test-api-key-0123456789"
SECRET = "hs256-secret-for-tests-0123456789abcdef"
QUERY = {"query": "{ sources { name } }"}


def _rsa() -> tuple[str, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return pem, public


def post(api: Any, token: str | None, body: dict[str, Any] = QUERY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(api.graphql, json=body, headers=headers)


def test_api_keys(start_api: Any) -> None:
    api = start_api(auth="api_key", api_keys=[{"key": KEY, "name": "dashboard"}])
    assert post(api, KEY).status_code == 200
    assert post(api, KEY).json()["data"] == {"sources": []}
    assert post(api, None).status_code == 401
    assert post(api, KEY + "x").status_code == 401
    basic = httpx.post(api.graphql, json=QUERY, headers={"Authorization": f"Basic {KEY}"})
    assert basic.status_code == 401
    # The GraphiQL page itself loads without a key (the queries it sends need one).
    page = httpx.get(api.graphql, headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    assert run(api.graphql, QUERY["query"], headers={"Authorization": f"Bearer {KEY}"}) == {
        "sources": []
    }


def test_jwt_hs256_and_rs256(start_api: Any) -> None:
    private_pem, public_pem = _rsa()
    api = start_api(
        auth="jwt",
        jwt={
            "algorithms": ["HS256", "RS256"],
            "secret": SECRET,
            "public_key": public_pem,
            "audience": "hosepipe",
            "issuer": "tests",
        },
    )
    claims = {"sub": "alice", "aud": "hosepipe", "iss": "tests", "exp": int(time.time()) + 60}
    hs = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(SECRET))
    rs = jwt.encode({"alg": "RS256"}, claims, RSAKey.import_key(private_pem))
    assert post(api, hs).status_code == 200
    assert post(api, rs).status_code == 200

    expired = jwt.encode(
        {"alg": "HS256"}, {**claims, "exp": int(time.time()) - 3600}, OctKey.import_key(SECRET)
    )
    wrong_secret = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key("x" * 40))
    wrong_audience = jwt.encode(
        {"alg": "HS256"}, {**claims, "aud": "other"}, OctKey.import_key(SECRET)
    )
    other_rsa, _ = _rsa()
    wrong_rsa = jwt.encode({"alg": "RS256"}, claims, RSAKey.import_key(other_rsa))
    for token in (expired, wrong_secret, wrong_audience, wrong_rsa, "not.a.jwt", hs[:-4]):
        response = post(api, token)
        assert response.status_code == 401, token
        assert SECRET not in response.text


def test_jwt_algorithm_is_pinned(start_api: Any) -> None:
    """A token signed with an algorithm the config does not list is refused."""
    api = start_api(auth="jwt", jwt={"algorithms": ["HS256"], "secret": SECRET})
    private_pem, _ = _rsa()
    rs = jwt.encode({"alg": "RS256"}, {"sub": "mallory"}, RSAKey.import_key(private_pem))
    response = post(api, rs)
    assert response.status_code == 401
    assert "RS256" in response.text


def test_depth_limit(start_api: Any) -> None:
    api = start_api(max_depth=3)
    ok = "{ events(first: 1) { edges { node { eventId } } } }"
    assert post(api, None, {"query": ok}).json().get("errors") is None
    deep = "{ orders(first: 1) { edges { node { event { payload } } } } }"
    errors = post(api, None, {"query": deep}).json()["errors"]
    assert "exceeds maximum operation depth" in errors[0]["message"]


def test_cost_limit(start_api: Any) -> None:
    api = start_api(max_cost=500)
    cheap = "{ events(first: 100) { edges { node { eventId } } } }"
    assert post(api, None, {"query": cheap}).json().get("errors") is None
    costly = "{ events(first: 1000) { edges { node { eventId } } } }"
    errors = post(api, None, {"query": costly}).json()["errors"]
    assert "more than the limit 500" in errors[0]["message"]
    # A variable without default counts as max_first (the worst case).
    by_variable = "query($n: Int!) { events(first: $n) { edges { node { eventId } } } }"
    errors = post(api, None, {"query": by_variable, "variables": {"n": 1}}).json()["errors"]
    assert "more than the limit" in errors[0]["message"]


def test_first_is_bounded(start_api: Any) -> None:
    api = start_api(max_first=100, max_cost=100_000)
    with pytest.raises(TransportQueryError, match="between 0 and 100"):
        run(api.graphql, "{ events(first: 101) { edges { cursor } } }")
    with pytest.raises(TransportQueryError, match="between 0 and 100"):
        run(api.graphql, "{ events(first: -1) { edges { cursor } } }")


def test_introspection_switch(start_api: Any) -> None:
    query = {"query": "{ __schema { queryType { name } } }"}
    on = start_api(introspection=True)
    assert post(on, None, query).json()["data"]["__schema"]["queryType"]["name"] == "Query"
    off = start_api(introspection=False)
    body = post(off, None, query).json()
    assert body.get("data") is None
    assert "introspection" in body["errors"][0]["message"].lower()


def test_internal_errors_are_masked(api: Any, api_db: Any) -> None:
    # A server-side failure, not a client mistake: the table is gone.
    with api_db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE events RENAME TO events_away"))
    body = post(
        api,
        None,
        {"query": '{ events(filter: {source: "orders"}) { edges { cursor } } }'},
    ).json()
    message = body["errors"][0]["message"]
    assert message == "internal error (logged on the server)"
    assert "Traceback" not in str(body) and "psycopg" not in str(body)
    assert "extensions" not in body["errors"][0] or "exception" not in str(body["errors"][0])


def test_cors(start_api: Any) -> None:
    api = start_api(cors_origins=["http://dashboard.example"])
    allowed = httpx.options(
        api.graphql,
        headers={
            "Origin": "http://dashboard.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert allowed.headers.get("access-control-allow-origin") == "http://dashboard.example"
    other = httpx.post(api.graphql, json=QUERY, headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
