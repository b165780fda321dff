"""Who may call the GraphQL API: static bearer keys or JWTs (HS256 / RS256).

JWTs are verified with ``joserfc`` (the Authlib project's JOSE library, which ``authlib.jose``
now defers to). The algorithm is taken from the configuration, never from the token alone, so a
token cannot pick ``none`` or sign with the public key as an HMAC secret.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey, RSAKey
from joserfc.jws import extract_compact
from joserfc.jwt import JWTClaimsRegistry

from hosepipe.config import ApiConfig


class AuthError(Exception):
    """The request carries no valid credentials; the message says why (never the secret)."""


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    name: str
    claims: dict[str, Any] = field(default_factory=dict)


ANONYMOUS = Principal("anonymous")


class Authenticator:
    """Checks an ``Authorization`` header value against ``api.auth``."""

    def __init__(self, config: ApiConfig) -> None:
        self.mode = config.auth
        self._keys = [(k.key.encode(), k.name or f"key-{i}") for i, k in enumerate(config.api_keys)]
        self._jwt_keys: dict[str, Any] = {}
        self._claims: JWTClaimsRegistry | None = None
        if config.auth == "jwt" and config.jwt is not None:
            if "HS256" in config.jwt.algorithms and config.jwt.secret:
                self._jwt_keys["HS256"] = OctKey.import_key(config.jwt.secret)
            if "RS256" in config.jwt.algorithms and config.jwt.public_key:
                self._jwt_keys["RS256"] = RSAKey.import_key(config.jwt.public_key)
            options: dict[str, Any] = {"exp": {"essential": False}}
            if config.jwt.audience:
                options["aud"] = {"essential": True, "value": config.jwt.audience}
            if config.jwt.issuer:
                options["iss"] = {"essential": True, "value": config.jwt.issuer}
            self._claims = JWTClaimsRegistry(leeway=30, **options)

    @property
    def required(self) -> bool:
        return self.mode != "none"

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind ``authorization`` (``Bearer <token>``); :class:`AuthError` if none."""
        if self.mode == "none":
            return ANONYMOUS
        if not authorization:
            raise AuthError("missing Authorization header: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("Authorization must be 'Bearer <token>'")
        if self.mode == "api_key":
            return self._check_key(token)
        return self._check_jwt(token)

    def _check_key(self, token: str) -> Principal:
        presented = token.encode()
        for secret, name in self._keys:
            # Constant-time comparison so response times do not leak key prefixes.
            if hmac.compare_digest(presented, secret):
                return Principal(name)
        raise AuthError("unknown API key")

    def _check_jwt(self, token: str) -> Principal:
        try:
            header = extract_compact(token.encode()).headers()
        except (JoseError, ValueError) as exc:
            raise AuthError("malformed JWT") from exc
        algorithm = header.get("alg")
        key = self._jwt_keys.get(str(algorithm))
        if key is None:
            raise AuthError(f"JWT algorithm {algorithm!r} is not accepted here")
        try:
            decoded = jwt.decode(token, key, algorithms=[str(algorithm)])
            assert self._claims is not None
            self._claims.validate(decoded.claims)
        except JoseError as exc:
            raise AuthError(f"JWT rejected: {exc.error or type(exc).__name__}") from exc
        claims = dict(decoded.claims)
        if "exp" not in claims and "iat" in claims and claims["iat"] > time.time() + 60:
            raise AuthError("JWT rejected: issued in the future")
        return Principal(str(claims.get("sub", "jwt")), claims)
