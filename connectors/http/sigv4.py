"""Verify AWS Signature Version 4 on incoming Firehose API requests.

The expected signature is recomputed with botocore's own signer over the request exactly as it
was received (method, path, query, the headers the client says it signed, the body), for the
access key named in the credential scope, then compared in constant time. Nothing here
re-implements the canonicalisation rules: botocore's ``SigV4Auth`` does.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ALGORITHM = "AWS4-HMAC-SHA256"
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"


class SignatureError(Exception):
    """The request is not signed by a known key; ``code`` is the AWS error type."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the verifier needs from an HTTP request, as received."""

    method: str
    scheme: str
    host: str
    path: str
    query: str
    headers: Sequence[tuple[str, str]]
    body: bytes


def verify(
    request: SignedRequest,
    secrets: Mapping[str, str],
    *,
    region: str,
    service: str,
    max_skew: timedelta,
    now: datetime | None = None,
) -> str:
    """Return the access key id that signed ``request``; raise :class:`SignatureError`."""
    header_map: dict[str, list[str]] = {}
    for name, value in request.headers:
        header_map.setdefault(name.lower(), []).append(value)
    authorization = (header_map.get("authorization") or [""])[0]
    if not authorization:
        raise SignatureError(
            "MissingAuthenticationTokenException", "the request has no Authorization header"
        )
    match = _AUTH.match(authorization)
    if match is None:
        raise SignatureError(
            "IncompleteSignatureException",
            f"the Authorization header is not a {ALGORITHM} signature",
        )
    parts = match["credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SignatureError(
            "IncompleteSignatureException",
            "Credential must be KEY/DATE/REGION/SERVICE/aws4_request",
        )
    access_key, scope_date, scope_region, scope_service, _ = parts
    secret = secrets.get(access_key)
    if secret is None:
        raise SignatureError(
            "UnrecognizedClientException", "the security token included in the request is invalid"
        )
    if scope_region != region or scope_service != service:
        raise SignatureError(
            "InvalidSignatureException",
            f"credential scope {scope_region}/{scope_service} does not match {region}/{service}",
        )
    stamp = (header_map.get("x-amz-date") or [""])[0]
    try:
        signed_at = datetime.strptime(stamp, _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError(
            "IncompleteSignatureException", "X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ"
        ) from None
    if scope_date != stamp[:8]:
        raise SignatureError(
            "InvalidSignatureException", "the credential date does not match X-Amz-Date"
        )
    current = now or datetime.now(UTC)
    if abs(current - signed_at) > max_skew:
        raise SignatureError(
            "InvalidSignatureException",
            f"Signature expired: {stamp} is more than {int(max_skew.total_seconds())} s "
            f"from the server time {current.strftime(_AMZ_DATE)}",
        )
    signed_names = match["signed"].split(";")
    if "host" not in signed_names or "x-amz-date" not in signed_names:
        raise SignatureError(
            "IncompleteSignatureException", "SignedHeaders must include host and x-amz-date"
        )
    headers: dict[str, str] = {}
    for name in signed_names:
        values = header_map.get(name)
        if values is None:
            raise SignatureError(
                "IncompleteSignatureException", f"signed header {name!r} is not in the request"
            )
        headers[name] = ",".join(values)
    url = f"{request.scheme}://{request.host}{request.path}"
    if request.query:
        url = f"{url}?{request.query}"
    aws_request = AWSRequest(method=request.method, url=url, headers=headers, data=request.body)
    aws_request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(access_key, secret), service, region)
    canonical = signer.canonical_request(aws_request)
    expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise SignatureError(
            "InvalidSignatureException",
            "the request signature we calculated does not match the signature you provided",
        )
    return access_key
