"""A stand-in for the gateway in unit tests: its signing keys, its JWKS (served
through an injected fetch that counts requests) and assertions signed the way
src/core/token.rs ``assertion_signing_input`` makes them, or broken on purpose."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any, Dict, List, Optional

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import get_default_algorithms

ISSUER = "https://auth.example.test"
AUDIENCE = "https://api.example.test"
TYPE = "portcullis-assertion+jwt"
NOW = 1893456000  # 2030-01-01

ALGORITHMS = get_default_algorithms()


def b64url(value: Any) -> str:
    raw = value if isinstance(value, bytes) else (value if isinstance(value, str) else json.dumps(value)).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Key:
    def __init__(self, alg: str = "EdDSA", kid: Optional[str] = None) -> None:
        self.alg = alg
        self.kid = kid or str(uuid.uuid4())
        if alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
        jwk = ALGORITHMS[alg].to_jwk(self.private.public_key(), as_dict=True)
        self.jwk: Dict[str, Any] = {**jwk, "kid": self.kid, "alg": alg, "use": "sig"}


def sign(alg: str, key: Any, header: Dict[str, Any], payload: Dict[str, Any]) -> str:
    """``header.payload.signature`` signed as JWS ``alg`` (EdDSA, ES256, or HS256 with a secret)."""
    header = {k: v for k, v in header.items() if v is not None}
    payload = {k: v for k, v in payload.items() if v is not None}
    signing_input = f"{b64url(header)}.{b64url(payload)}".encode()
    if alg == "HS256":
        # By hand: PyJWT (rightly) refuses to HMAC with key material.
        signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    else:
        signature = ALGORITHMS[alg].sign(signing_input, key)
    return f"{signing_input.decode()}.{b64url(signature)}"


def claims(**over: Any) -> Dict[str, Any]:
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "sid": "session-1",
        "roles": ["editor"],
        "email": "ada@example.com",
        "email_verified": True,
        "jti": "token-1:1893456000",
        "iat": NOW,
        "exp": NOW + 60,
    }
    base.update(over)
    return base


class FakeGateway:
    def __init__(self, *keys: Key) -> None:
        self.keys: List[Key] = list(keys) or [Key("EdDSA")]
        self.fetches = 0
        self.urls: List[str] = []
        self.failing = False

    @property
    def key(self) -> Key:
        return self.keys[0]

    def fetch(self, url: str) -> Any:
        self.fetches += 1
        self.urls.append(url)
        if self.failing:
            raise OSError("connection refused")
        return {"keys": [k.jwk for k in self.keys]}

    def assertion(self, key: Optional[Key] = None, header: Optional[Dict[str, Any]] = None, **over: Any) -> str:
        key = key or self.key
        h = {"alg": key.alg, "kid": key.kid, "typ": TYPE, **(header or {})}
        return sign(key.alg, key.private, h, claims(**over))


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += secs


def options(gw: FakeGateway, **over: Any) -> Dict[str, Any]:
    return {"issuer": ISSUER, "audience": AUDIENCE, "fetch_jwks": gw.fetch, "clock": over.pop("clock", None) or Clock(), **over}
