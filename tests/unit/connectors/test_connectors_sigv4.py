"""SigV4 verification against signatures made by botocore itself (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from connectors.http.sigv4 import SignatureError, SignedRequest, verify

SECRETS = {"AKIDEXAMPLE": "secret-one"}
SKEW = timedelta(minutes=5)


def signed(
    body: bytes = b'{"DeliveryStreamName": "s"}', secret: str = "secret-one"
) -> SignedRequest:
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:8080/",
        data=body,
        headers={
            "X-Amz-Target": "Firehose_20150804.PutRecord",
            "Content-Type": "application/x-amz-json-1.1",
            "User-Agent": "test",
        },
    )
    SigV4Auth(Credentials("AKIDEXAMPLE", secret), "firehose", "us-east-1").add_auth(request)
    headers = [(k, v) for k, v in request.headers.items()] + [("host", "127.0.0.1:8080")]
    return SignedRequest("POST", "http", "127.0.0.1:8080", "/", "", headers, body)


def check(request: SignedRequest, **kwargs: object) -> str:
    options: dict = {"region": "us-east-1", "service": "firehose", "max_skew": SKEW}
    options.update(kwargs)
    return verify(request, SECRETS, **options)


def test_valid_signature() -> None:
    assert check(signed()) == "AKIDEXAMPLE"


def test_tampered_body_or_wrong_secret() -> None:
    request = signed()
    tampered = SignedRequest(*[*vars_of(request)[:-1], b'{"DeliveryStreamName": "t"}'])
    with pytest.raises(SignatureError) as error:
        check(tampered)
    assert error.value.code == "InvalidSignatureException"
    with pytest.raises(SignatureError) as error:
        check(signed(secret="other-secret"))
    assert error.value.code == "InvalidSignatureException"


def test_stale_signature() -> None:
    with pytest.raises(SignatureError, match="expired"):
        check(signed(), now=datetime.now(UTC) + timedelta(minutes=6))


def test_missing_unknown_and_wrong_region() -> None:
    request = signed()
    bare = SignedRequest(
        *[
            *vars_of(request)[:5],
            [(k, v) for k, v in request.headers if k.lower() != "authorization"],
            request.body,
        ]
    )
    with pytest.raises(SignatureError) as error:
        check(bare)
    assert error.value.code == "MissingAuthenticationTokenException"
    with pytest.raises(SignatureError) as error:
        verify(request, {"OTHER": "x"}, region="us-east-1", service="firehose", max_skew=SKEW)
    assert error.value.code == "UnrecognizedClientException"
    with pytest.raises(SignatureError):
        check(request, region="eu-west-1")


def vars_of(request: SignedRequest) -> list:
    return [
        request.method,
        request.scheme,
        request.host,
        request.path,
        request.query,
        request.headers,
        request.body,
    ]
