"""Verification of the gateway's ``X-Auth-Assertion`` (framework-free).

The assertion is a compact JWS (``typ`` ``portcullis-assertion+jwt``, EdDSA or
ES256) signed by a key of the gateway's JWKS. Everything is pinned here, never
taken from the token: the algorithm must be one of the two *and* the algorithm
of the key its ``kid`` names; keys come only from the configured JWKS URL
(``jku``, ``x5u``, ``jwk`` header members are ignored); ``typ``, ``iss``,
``aud``, ``exp``, ``iat`` and ``nbf`` are checked after the signature (by
PyJWT, times against an injectable clock). The bare ``X-Auth-*`` headers are
never read: the identity comes from the verified assertion only.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

import jwt

ASSERTION_HEADER = "x-auth-assertion"
"""The request header the gateway puts the assertion in (lowercase)."""
ASSERTION_TYPE = "portcullis-assertion+jwt"
"""The ``typ`` of gateway assertions."""

MAX_ASSERTION_LENGTH = 8192
MAX_KID_LENGTH = 128
MAX_JWKS_BYTES = 256 * 1024
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z")
# The challenge of every 401 (RFC 9110 section 11.6.1 requires one): no
# ``error``. A refused assertion is the gateway's credential, not the caller's
# access token, so ``error="invalid_token"`` would be wrong, and harmful: the
# browser client refreshes the token and sends the request again on it, which
# cures nothing. RFC 6750 section 3 has no code that fits: ``invalid_token`` is
# about the caller's bearer token, ``invalid_request`` goes with 400. Its rule
# for a request carrying no bearer credential of the scheme (a bare challenge,
# "no error code or other error information") is the one that applies; the
# problem+json body says what was wrong. The realm stays the gateway's.
_REALM = 'Bearer realm="portcullis"'
_ALGS = ("EdDSA", "ES256")

# The ``title`` of a problem with ``type`` "about:blank": its status phrase
# (RFC 9457 section 4.2.1).
_TITLES = {401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}


class PortcullisError(Exception):
    """A refusal: ``status`` and ``code`` say what to answer.

    Codes: ``missing_assertion``, ``invalid_assertion``, ``assertion_expired``
    (401), ``insufficient_role`` (403), ``jwks_unavailable`` (503).
    """

    def __init__(self, code: str, status: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.status = status
        self.detail = detail

    @property
    def www_authenticate(self) -> Optional[str]:
        """The challenge for 401 (bare, see ``_REALM``) and 403 (RFC 6750
        ``insufficient_scope``), else ``None``."""
        if self.status == 401:
            return _REALM
        if self.status == 403:
            description = self.detail.replace('"', "").replace("\\", "")
            return f'{_REALM}, error="insufficient_scope", error_description="{description}"'
        return None

    def problem(self) -> Dict[str, Any]:
        """The RFC 9457 problem+json body."""
        return {
            "type": "about:blank",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }


def _missing() -> PortcullisError:
    return PortcullisError(
        "missing_assertion", 401, "no X-Auth-Assertion header: requests must come through the gateway"
    )


def _invalid(detail: str) -> PortcullisError:
    return PortcullisError("invalid_assertion", 401, detail)


def _unavailable() -> PortcullisError:
    return PortcullisError("jwks_unavailable", 503, "the gateway's signing keys could not be fetched")


@dataclass(frozen=True)
class User:
    """The verified identity the gateway vouched for."""

    id: str
    """User id (``sub``)."""
    email: str
    """Email (``email``)."""
    email_verified: bool
    """Whether the email is verified (``email_verified``)."""
    roles: List[str]
    """Role names (``roles``)."""
    session_id: str
    """Session id (``sid``)."""
    claims: Dict[str, Any] = field(repr=False)
    """Every claim of the verified assertion, including any beyond the ones above."""

    def has_role(self, *roles: str) -> bool:
        """Whether the user has at least one of ``roles``."""
        return any(r in self.roles for r in roles)


def check_any_role(user: User, roles: Sequence[str]) -> None:
    """Raises ``insufficient_role`` (403) unless ``user`` has one of ``roles``."""
    if user.has_role(*roles):
        return
    need = f"the role {roles[0]}" if len(roles) == 1 else f"one of the roles {', '.join(roles)}"
    raise PortcullisError("insufficient_role", 403, f"this needs {need}")


def role_list(roles: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """A role argument checked once: a non-empty string or list of them."""
    items = (roles,) if isinstance(roles, str) else tuple(roles)
    if not items or not all(isinstance(r, str) and r for r in items):
        raise TypeError("roles must be a non-empty string or a non-empty list of non-empty strings")
    return items


def _audience_key(value: str) -> str:
    """A URL audience as its origin (``scheme://host[:port]``); anything else as is."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return value
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return value
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default = 80 if parts.scheme == "http" else 443
    return f"{parts.scheme}://{host}" if port in (None, default) else f"{parts.scheme}://{host}:{port}"


def _pin_jwk(jwk: Any) -> Optional[Tuple[str, Any]]:
    """A JWKS key as ``(alg, public key)``, or ``None`` for one that is not an
    Ed25519 / P-256 signing key (or names another ``alg``)."""
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
        return None
    if jwk.get("use", "sig") != "sig":
        return None
    if "key_ops" in jwk and not (isinstance(jwk["key_ops"], list) and "verify" in jwk["key_ops"]):
        return None
    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        alg, public = "EdDSA", {"kty": "OKP", "crv": "Ed25519", "x": jwk.get("x")}
    elif jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        alg, public = "ES256", {"kty": "EC", "crv": "P-256", "x": jwk.get("x"), "y": jwk.get("y")}
    else:
        return None
    if jwk.get("alg", alg) != alg:
        return None
    try:
        return alg, jwt.PyJWK(public, algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError):
        return None


def _fetch_jwks(url: str, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError("the JWKS is too large")
    return json.loads(body)


class NeedsFetch(Exception):
    """Raised by ``verify_assertion(..., allow_fetch=False)`` when the JWKS must be fetched first."""


class _BackingOff(Exception):
    """A JWKS fetch failed less than ``cooldown`` ago: not tried again yet."""


class _KeySet:
    """The gateway's keys: fetched on first use, kept for ``cache_ttl``,
    fetched again when stale and, at most once per ``cooldown``, when a ``kid``
    is unknown (a rotation). One fetch at a time across threads; threads that
    waited for a fetch use its outcome instead of fetching again. A failed
    fetch is not retried for ``cooldown`` either: during a JWKS outage requests
    answer at once (from the cached keys while they may be used, else 503)
    instead of each waiting for a fetch that is likely to fail again.
    ``clear`` starts a new generation: a fetch begun before it neither stores
    its keys nor stands in for a fetch of requests that waited for it."""

    def __init__(self, url: str, fetch: Callable[[str], Any], clock: Callable[[], float], cache_ttl: float, cooldown: float) -> None:
        self._url = url
        self._fetch = fetch
        self._clock = clock
        self._ttl = cache_ttl
        self._cooldown = cooldown
        self._keys: Dict[str, Tuple[str, Any]] = {}
        self._fetched_at = -math.inf
        self._last_unknown_kid_fetch = -math.inf
        self._failed_at = -math.inf
        self._attempts = 0
        self._attempt_generation = 0
        self._last_error: Optional[BaseException] = None
        self._lock = threading.Lock()
        # Bumped by ``clear``. ``_state`` guards it and what a fetch stores;
        # never held across I/O, so ``clear`` does not wait for a fetch.
        self._generation = 0
        self._state = threading.Lock()

    def _stale(self) -> bool:
        return self._clock() - self._fetched_at >= self._ttl

    def _not_backing_off(self) -> None:
        """Raises ``_BackingOff`` while the last fetch failed less than ``cooldown`` ago."""
        if self._clock() - self._failed_at < self._cooldown:
            raise _BackingOff() from self._last_error

    def clear(self) -> None:
        """Forgets the keys (and any back-off): the next ``get`` fetches the
        JWKS. Without the fetch lock, so it never waits for a fetch; a fetch
        under way does not store what it got."""
        with self._state:
            self._generation += 1
            self._keys = {}
            self._fetched_at = -math.inf
            self._last_unknown_kid_fetch = -math.inf
            self._failed_at = -math.inf

    def cached(self, kid: str) -> Optional[Tuple[str, Any]]:
        """The key for ``kid`` without any I/O; raises ``NeedsFetch`` when
        ``get`` would fetch."""
        key = self._keys.get(kid)
        if self._stale():
            raise NeedsFetch()
        now = self._clock()
        if key is None and (now - self._last_unknown_kid_fetch >= self._cooldown or now - self._failed_at < self._cooldown):
            raise NeedsFetch()
        return key

    def get(self, kid: str) -> Optional[Tuple[str, Any]]:
        """The key for ``kid`` (``None``: not in the JWKS), fetching as needed.
        Answers from one generation: when ``clear`` runs meanwhile, it starts
        over (a few times)."""
        for _ in range(3):
            generation = self._generation
            try:
                key = self._get_once(kid)
            except Exception:
                if generation == self._generation:
                    raise
                continue
            if generation == self._generation:
                return key
        raise _unavailable() from RuntimeError("the key cache was cleared during each fetch")

    def _get_once(self, kid: str) -> Optional[Tuple[str, Any]]:
        fetched = False
        if self._stale():

            def stale() -> bool:
                if not self._stale():
                    return False
                self._not_backing_off()
                return True

            try:
                self._refresh(stale)
                fetched = True
            except Exception as err:  # noqa: BLE001 (any fetch or parse failure)
                # A failed refresh keeps the previous keys for at most as long again.
                if not self._keys or self._clock() - self._fetched_at >= 2 * self._ttl:
                    raise _unavailable() from err
        key = self._keys.get(kid)
        if key is not None or fetched:
            return key

        def wanted() -> bool:
            if kid in self._keys:
                return False
            # Before the cooldown: an unknown kid whose own fetch failed gets 503, not 401.
            self._not_backing_off()
            now = self._clock()
            if now - self._last_unknown_kid_fetch < self._cooldown:
                return False
            self._last_unknown_kid_fetch = now
            return True

        try:
            self._refresh(wanted)
        except Exception as err:  # noqa: BLE001
            raise _unavailable() from err
        return self._keys.get(kid)

    def _refresh(self, wanted: Callable[[], bool]) -> None:
        """Fetches the JWKS if ``wanted()`` (asked under the lock) unless a
        fetch of the current generation ran while this thread waited, whose
        outcome then counts."""
        seen = self._attempts
        with self._lock:
            if self._attempts != seen and self._attempt_generation == self._generation:
                if self._last_error is not None:
                    raise self._last_error
                return
            if not wanted():
                return
            generation = self._generation
            try:
                self._load(generation)
                with self._state:
                    if generation == self._generation:
                        self._last_error = None
                        self._failed_at = -math.inf
            except Exception as err:
                with self._state:
                    if generation == self._generation:
                        self._last_error = err
                        self._failed_at = self._clock()
                raise
            finally:
                # Counted when done: whoever read the count before this
                # fetch ended waited for it, and takes its outcome (if it is
                # of the generation they are in).
                self._attempt_generation = generation
                self._attempts += 1

    def _load(self, generation: int) -> None:
        """Fetches the JWKS; stores its keys unless ``clear`` ran since
        ``generation``."""
        doc = self._fetch(self._url)
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("the JWKS has no keys array")
        keys: Dict[str, Tuple[str, Any]] = {}
        ambiguous = set()
        for jwk in doc["keys"]:
            pinned = _pin_jwk(jwk)
            if pinned is None:
                continue
            if jwk["kid"] in keys:
                ambiguous.add(jwk["kid"])
            keys[jwk["kid"]] = pinned
        # Two keys under one kid: neither is trusted.
        for kid in ambiguous:
            del keys[kid]
        with self._state:
            if generation != self._generation:
                return
            self._keys = keys
            self._fetched_at = self._clock()


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class AssertionVerifier:
    """Verifies assertions of one gateway for one origin.

    ``issuer``: the gateway's ``ISSUER`` (the ``iss`` of its tokens; trailing
    slashes are dropped, as the gateway does).
    ``audience``: this origin as the gateway sees it, the URL origin of the
    gateway's ``ORIGIN_URL`` (or a list of them); URLs are compared by their
    origin. ``jwks_url`` defaults to ``<issuer>/.well-known/jwks.json``.
    ``leeway``: clock skew tolerated on ``exp``/``iat``/``nbf``, seconds.
    ``jwks_cache_ttl``: seconds fetched keys are used before the JWKS is
    fetched again (if that fails, they are used for at most as long again; a
    key retired at once at the gateway is trusted until then, see
    ``clear_key_cache``). ``refetch_cooldown``: an unknown ``kid`` fetches the
    JWKS again at most once per this many seconds, and a failed fetch is not
    retried sooner. ``clock``: seconds since the epoch.
    ``fetch_jwks``: ``url -> parsed JSON``, by default ``urllib`` with
    ``jwks_timeout`` seconds.
    """

    def __init__(
        self,
        issuer: str,
        audience: Union[str, Sequence[str]],
        *,
        jwks_url: Optional[str] = None,
        leeway: float = 30,
        jwks_cache_ttl: float = 300,
        refetch_cooldown: float = 5,
        jwks_timeout: float = 5,
        clock: Callable[[], float] = time.time,
        fetch_jwks: Optional[Callable[[str], Any]] = None,
    ) -> None:
        # The gateway drops trailing slashes from its ISSUER
        # (``https://auth.example/`` signs ``iss`` ``https://auth.example``):
        # so does this, so ISSUER can be copied as it is.
        if not isinstance(issuer, str) or not issuer.rstrip("/"):
            raise TypeError("issuer is required (the gateway's ISSUER)")
        issuer = issuer.rstrip("/")
        audiences = [audience] if isinstance(audience, str) else list(audience)
        if not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise TypeError("audience is required (this origin as the gateway sees it)")
        for name, value in (("leeway", leeway), ("jwks_cache_ttl", jwks_cache_ttl), ("refetch_cooldown", refetch_cooldown), ("jwks_timeout", jwks_timeout)):
            if not _is_number(value) or value < 0:
                raise TypeError(f"{name} must be a non-negative number")
        self.issuer = issuer
        self.audience: Tuple[str, ...] = tuple(_audience_key(a) for a in audiences)
        self.jwks_url = jwks_url or issuer + "/.well-known/jwks.json"
        if urlsplit(self.jwks_url).scheme not in ("http", "https"):
            raise TypeError("jwks_url must be an http(s) URL")
        self._leeway = leeway
        self._clock = clock
        fetch = fetch_jwks or (lambda url: _fetch_jwks(url, jwks_timeout))
        self._keys = _KeySet(self.jwks_url, fetch, clock, jwks_cache_ttl, refetch_cooldown)

    def clear_key_cache(self) -> None:
        """Forgets the cached keys, so the next verification fetches the JWKS.
        For a key retired at once at the gateway (the ``key_retired``
        webhook), which an origin otherwise trusts until its cache expires.
        No I/O, never waits for a fetch; a fetch under way does not store
        what it got. Call it again after 5 s plus the fetch timeout: the
        gateway's isolates drop the key from their JWKS within 5 s, and a
        fetch begun after the first call may have been answered by one that
        still had it."""
        self._keys.clear()

    def verify_assertion(self, value: Union[str, Sequence[str], None], *, allow_fetch: bool = True) -> User:
        """Verifies an ``X-Auth-Assertion`` value (a list: every value the
        request carried) and returns the identity, or raises
        ``PortcullisError``. With ``allow_fetch=False`` it never blocks on the
        network and raises ``NeedsFetch`` instead (for async callers)."""
        if isinstance(value, (list, tuple)):
            if len(value) > 1:
                raise _invalid("more than one X-Auth-Assertion header")
            value = value[0] if value else None
        if value is None or value == "":
            raise _missing()
        if not isinstance(value, str) or len(value) > MAX_ASSERTION_LENGTH or not _COMPACT_JWS.match(value):
            raise _invalid("the assertion is not a compact JWT")
        try:
            header = jwt.get_unverified_header(value)
        except jwt.PyJWTError:
            raise _invalid("the assertion is not a compact JWT") from None
        if header.get("typ") != ASSERTION_TYPE:
            raise _invalid(f"typ must be {ASSERTION_TYPE}")
        if header.get("alg") not in _ALGS:
            raise _invalid("alg must be EdDSA or ES256")
        if "crit" in header:
            raise _invalid("crit is not supported")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise _invalid("kid missing or malformed")

        pinned = self._keys.get(kid) if allow_fetch else self._keys.cached(kid)
        if pinned is None:
            raise _invalid("the assertion's key is not in the gateway's JWKS")
        alg, key = pinned
        if header["alg"] != alg:
            raise _invalid("alg does not match the key")
        try:
            claims = jwt.decode(
                value,
                key=key,
                algorithms=[alg],
                audience=list(self.audience),
                issuer=self.issuer,
                options={
                    # Times are checked below, against our clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["iss", "aud"],
                },
            )
        except jwt.InvalidSignatureError:
            raise _invalid("bad signature") from None
        except jwt.InvalidAudienceError:
            raise _invalid("the assertion is for another audience") from None
        except jwt.InvalidIssuerError:
            raise _invalid("wrong issuer") from None
        except jwt.MissingRequiredClaimError as err:
            raise _invalid("wrong issuer" if err.claim == "iss" else "the assertion is for another audience") from None
        except jwt.PyJWTError:
            raise _invalid("the assertion is not a compact JWT") from None
        if not isinstance(claims, dict):
            raise _invalid("the assertion is not a compact JWT")

        now = self._clock()
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not _is_number(exp) or not _is_number(iat):
            raise _invalid("exp and iat are required")
        if nbf is not None and not _is_number(nbf):
            raise _invalid("malformed nbf")
        if now > exp + self._leeway:
            raise PortcullisError("assertion_expired", 401, "the assertion has expired")
        if iat > now + self._leeway:
            raise _invalid("the assertion is issued in the future")
        if nbf is not None and nbf > now + self._leeway:
            raise _invalid("the assertion is not valid yet")

        sub, sid, email, roles = claims.get("sub"), claims.get("sid"), claims.get("email"), claims.get("roles")
        if (
            not isinstance(sub, str)
            or not sub
            or not isinstance(sid, str)
            or not isinstance(email, str)
            or not isinstance(roles, list)
            or not all(isinstance(r, str) for r in roles)
        ):
            raise _invalid("the assertion lacks sub, sid, email or roles")
        return User(
            id=sub,
            email=email,
            email_verified=claims.get("email_verified") is True,
            roles=list(roles),
            session_id=sid,
            claims=claims,
        )
