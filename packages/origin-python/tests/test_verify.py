"""The framework-free verifier: what it accepts, what it refuses, and how it
fetches and caches the gateway's JWKS."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway import AUDIENCE, ISSUER, NOW, TYPE, Clock, FakeGateway, Key, b64url, claims, options, sign
from portcullis import AssertionVerifier, NeedsFetch, PortcullisError


def refused(verifier: AssertionVerifier, value, code: str, detail: str = "") -> PortcullisError:
    with pytest.raises(PortcullisError) as info:
        verifier.verify_assertion(value)
    assert info.value.code == code, info.value.detail
    assert detail in info.value.detail
    return info.value


def test_a_valid_eddsa_assertion_gives_the_identity_every_claim_included():
    gw = FakeGateway()
    user = AssertionVerifier(**options(gw)).verify_assertion(gw.assertion(plan="pro", org={"id": "o1"}))
    assert user.id == "user-1"
    assert user.email == "ada@example.com"
    assert user.email_verified is True
    assert user.roles == ["editor"]
    assert user.session_id == "session-1"
    assert user.claims["plan"] == "pro"
    assert user.claims["org"] == {"id": "o1"}
    assert user.claims["iss"] == ISSUER


def test_a_valid_es256_assertion_is_accepted():
    gw = FakeGateway(Key("ES256"))
    assert AssertionVerifier(**options(gw)).verify_assertion(gw.assertion()).id == "user-1"


def test_a_changed_payload_under_the_original_signature_is_refused():
    gw = FakeGateway()
    v = AssertionVerifier(**options(gw))
    h, _, s = gw.assertion().split(".")
    refused(v, f"{h}.{b64url(claims(roles=['admin']))}.{s}", "invalid_assertion", "bad signature")


def test_an_assertion_signed_by_another_key_under_a_published_kid_is_refused():
    gw = FakeGateway()
    v = AssertionVerifier(**options(gw))
    refused(v, gw.assertion(key=Key("EdDSA", kid=gw.key.kid)), "invalid_assertion", "bad signature")


@pytest.mark.parametrize("typ", ["at+jwt", "JWT", None])
def test_a_wrong_or_missing_typ_is_refused(typ):
    gw = FakeGateway()
    refused(AssertionVerifier(**options(gw)), gw.assertion(header={"typ": typ}), "invalid_assertion", "typ")


def test_an_assertion_for_another_audience_is_refused_and_url_audiences_compare_by_origin():
    gw = FakeGateway()
    v = AssertionVerifier(**options(gw))
    refused(v, gw.assertion(aud="https://other.example.test"), "invalid_assertion", "audience")
    refused(v, gw.assertion(aud=["https://other.example.test"]), "invalid_assertion", "audience")
    refused(v, gw.assertion(aud=None), "invalid_assertion", "audience")
    assert v.verify_assertion(gw.assertion(aud=[AUDIENCE, "x"])).id == "user-1"
    assert AssertionVerifier(**options(gw, audience=AUDIENCE + "/")).verify_assertion(gw.assertion()).id == "user-1"
    assert AssertionVerifier(**options(gw, audience="HTTPS://API.example.test:443")).verify_assertion(gw.assertion()).id == "user-1"
    several = AssertionVerifier(**options(gw, audience=["https://a.example.test", AUDIENCE]))
    assert several.verify_assertion(gw.assertion()).id == "user-1"


def test_an_assertion_from_another_issuer_is_refused():
    gw = FakeGateway()
    v = AssertionVerifier(**options(gw))
    refused(v, gw.assertion(iss="https://evil.example.test"), "invalid_assertion", "issuer")
    refused(v, gw.assertion(iss=ISSUER + "/"), "invalid_assertion", "issuer")
    refused(v, gw.assertion(iss=None), "invalid_assertion", "issuer")


def test_an_issuer_with_a_trailing_slash_is_taken_as_the_gateway_takes_it_without():
    gw = FakeGateway()
    v = AssertionVerifier(**options(gw, issuer=ISSUER + "/"))
    assert v.issuer == ISSUER
    assert v.jwks_url == ISSUER + "/.well-known/jwks.json"
    assert v.verify_assertion(gw.assertion()).id == "user-1", "the gateway signs iss without the slash"
    assert gw.urls == [ISSUER + "/.well-known/jwks.json"]
    refused(v, gw.assertion(iss=ISSUER + "/"), "invalid_assertion", "issuer")
    assert AssertionVerifier(**options(gw, issuer=ISSUER + "//")).verify_assertion(gw.assertion()).id == "user-1"
    with pytest.raises(TypeError, match="issuer"):
        AssertionVerifier("/", AUDIENCE)


def test_expiry_accepted_within_the_leeway_refused_after_it():
    gw = FakeGateway()
    clock = Clock()
    v = AssertionVerifier(**options(gw, clock=clock))
    a = gw.assertion()
    clock.advance(60 + 30)
    assert v.verify_assertion(a).id == "user-1"
    clock.advance(1)
    refused(v, a, "assertion_expired")
    strict = AssertionVerifier(**options(gw, clock=clock, leeway=0))
    refused(strict, gw.assertion(iat=NOW + 30, exp=NOW + 90), "assertion_expired")


def test_issued_in_the_future_not_yet_valid_or_without_exp_or_iat_is_refused():
    gw = FakeGateway()
    v = AssertionVerifier(**options(gw))
    refused(v, gw.assertion(iat=NOW + 31, exp=NOW + 91), "invalid_assertion", "future")
    refused(v, gw.assertion(nbf=NOW + 31), "invalid_assertion", "not valid yet")
    refused(v, gw.assertion(exp=None), "invalid_assertion", "exp and iat")
    refused(v, gw.assertion(iat="now"), "invalid_assertion", "exp and iat")
    assert v.verify_assertion(gw.assertion(iat=NOW + 29)).id == "user-1"


def test_alg_none_is_refused_with_or_without_a_signature():
    gw = FakeGateway()
    v = AssertionVerifier(**options(gw))
    h = b64url({"alg": "none", "kid": gw.key.kid, "typ": TYPE})
    p = b64url(claims())
    refused(v, f"{h}.{p}.", "invalid_assertion", "compact")
    refused(v, f"{h}.{p}.{b64url('x' * 64)}", "invalid_assertion", "alg must be")
    assert gw.fetches == 0


def test_hs256_keyed_with_the_published_public_key_is_refused():
    gw = FakeGateway()
    v = AssertionVerifier(**options(gw))
    x = gw.key.jwk["x"]
    for secret in (x.encode(), json.dumps(gw.key.jwk).encode()):
        hs = sign("HS256", secret, {"alg": "HS256", "kid": gw.key.kid, "typ": TYPE}, claims())
        refused(v, hs, "invalid_assertion", "alg must be")


def test_a_header_alg_other_than_the_keys_is_refused_even_a_supported_one():
    ed, es = Key("EdDSA"), Key("ES256")
    gw = FakeGateway(ed, es)
    v = AssertionVerifier(**options(gw))
    refused(v, sign("ES256", es.private, {"alg": "ES256", "kid": ed.kid, "typ": TYPE}, claims()), "invalid_assertion", "alg does not match")
    refused(v, sign("EdDSA", ed.private, {"alg": "EdDSA", "kid": es.kid, "typ": TYPE}, claims()), "invalid_assertion", "alg does not match")


def test_a_jwk_whose_alg_disagrees_with_its_key_type_is_not_used():
    k = Key("EdDSA")
    k.jwk["alg"] = "ES256"
    gw = FakeGateway(k)
    refused(AssertionVerifier(**options(gw)), gw.assertion(), "invalid_assertion", "not in the gateway's JWKS")


def test_an_unknown_kid_fetches_once_then_is_refused_without_fetches_until_the_cooldown_ends():
    gw = FakeGateway()
    clock = Clock()
    v = AssertionVerifier(**options(gw, clock=clock))
    v.verify_assertion(gw.assertion())
    assert gw.fetches == 1
    stranger = Key("EdDSA")
    refused(v, gw.assertion(key=stranger), "invalid_assertion", "not in the gateway's JWKS")
    assert gw.fetches == 2
    refused(v, gw.assertion(key=Key("EdDSA")), "invalid_assertion", "not in the gateway's JWKS")
    refused(v, gw.assertion(key=stranger), "invalid_assertion", "not in the gateway's JWKS")
    assert gw.fetches == 2
    clock.advance(4)
    refused(v, gw.assertion(key=stranger), "invalid_assertion", "not in the gateway's JWKS")
    assert gw.fetches == 2, "the default cooldown is 5 s, the gateway's JWKS reload interval"
    clock.advance(1)
    refused(v, gw.assertion(key=stranger), "invalid_assertion", "not in the gateway's JWKS")
    assert gw.fetches == 3


def test_a_rotated_key_is_picked_up_by_one_refetch_and_the_old_one_keeps_working():
    gw = FakeGateway()
    v = AssertionVerifier(**options(gw))
    old = gw.key
    v.verify_assertion(gw.assertion())
    fresh = Key("ES256")
    gw.keys = [fresh, old]
    assert v.verify_assertion(gw.assertion(key=fresh)).id == "user-1"
    assert gw.fetches == 2
    assert v.verify_assertion(gw.assertion(key=old)).id == "user-1"
    assert gw.fetches == 2


def test_the_jwks_is_fetched_once_for_many_requests_concurrent_ones_included_and_again_when_stale():
    gw = FakeGateway()
    clock = Clock()
    entered = threading.Event()
    release = threading.Event()
    plain = gw.fetch

    def slow_fetch(url):
        entered.set()
        release.wait(5)
        return plain(url)

    v = AssertionVerifier(**options(gw, clock=clock, jwks_cache_ttl=60, fetch_jwks=slow_fetch))
    a = gw.assertion(exp=NOW + 1000)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(v.verify_assertion, a) for _ in range(8)]
        assert entered.wait(5)
        release.set()
        assert all(f.result().id == "user-1" for f in futures)
    assert gw.fetches == 1
    assert gw.urls == [ISSUER + "/.well-known/jwks.json"]
    clock.advance(59)
    v.verify_assertion(a)
    assert gw.fetches == 1
    clock.advance(1)
    v.verify_assertion(a)
    assert gw.fetches == 2


class CountingLock:
    """A lock that counts the threads that came to take it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self.arrived = 0

    def __enter__(self):
        with self._cond:
            self.arrived += 1
            self._cond.notify_all()
        self._lock.acquire()

    def __exit__(self, *exc):
        self._lock.release()

    def wait_for(self, n: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.arrived >= n, 5)


def test_requests_that_waited_for_a_failing_fetch_share_its_failure_instead_of_retrying():
    gw = FakeGateway()
    gw.failing = True
    lock = CountingLock()
    plain = gw.fetch

    def fetch_once_all_wait(url):
        # The fetch ends only once every request is waiting for it.
        assert lock.wait_for(8)
        return plain(url)

    clock = Clock()
    v = AssertionVerifier(**options(gw, clock=clock, fetch_jwks=fetch_once_all_wait))
    v._keys._lock = lock
    a = gw.assertion()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(v.verify_assertion, a) for _ in range(8)]
        codes = []
        for f in futures:
            with pytest.raises(PortcullisError) as info:
                f.result()
            codes.append(info.value.code)
    assert codes == ["jwks_unavailable"] * 8
    assert gw.fetches == 1
    # Later requests try again, once the back-off is over.
    clock.advance(5)
    refused(v, a, "jwks_unavailable")
    assert gw.fetches == 2


def test_a_failed_fetch_is_not_retried_within_the_back_off():
    gw = FakeGateway()
    gw.failing = True
    clock = Clock()
    v = AssertionVerifier(**options(gw, clock=clock))
    a = gw.assertion()
    refused(v, a, "jwks_unavailable")
    assert gw.fetches == 1
    clock.advance(4)
    refused(v, a, "jwks_unavailable")
    assert gw.fetches == 1, "no new fetch within the back-off (refetch_cooldown)"
    clock.advance(1)
    refused(v, a, "jwks_unavailable")
    assert gw.fetches == 2, "the back-off over, one more"
    gw.failing = False
    refused(v, a, "jwks_unavailable")
    assert gw.fetches == 2, "a failure starts the back-off again"
    clock.advance(5)
    assert v.verify_assertion(a).id == "user-1"
    assert gw.fetches == 3


def test_during_a_jwks_outage_stale_keys_answer_at_once_one_fetch_per_back_off():
    gw = FakeGateway()
    clock = Clock()
    v = AssertionVerifier(**options(gw, clock=clock, jwks_cache_ttl=60))
    a = gw.assertion(exp=NOW + 1000)
    v.verify_assertion(a)
    gw.failing = True
    clock.advance(60)
    for _ in range(5):
        assert v.verify_assertion(a).id == "user-1"
    assert gw.fetches == 2, "one failed refresh, then the cached keys without fetching"
    # An unknown kid during the back-off: the JWKS cannot be asked, so 503, not "not in the JWKS".
    refused(v, gw.assertion(key=Key("EdDSA")), "jwks_unavailable")
    assert gw.fetches == 2
    clock.advance(5)
    assert v.verify_assertion(a).id == "user-1"
    assert gw.fetches == 3
    gw.failing = False
    clock.advance(5)
    assert v.verify_assertion(a).id == "user-1"
    assert gw.fetches == 4, "the JWKS back: fetched, and fresh again"
    assert v.verify_assertion(a).id == "user-1"
    assert gw.fetches == 4


def test_a_hanging_jwks_is_waited_for_once_per_back_off_not_by_every_request():
    gw = FakeGateway()
    clock = Clock()
    calls = []

    def hanging(url):
        # Fails only after the time its timeout allows has passed.
        calls.append(url)
        clock.advance(5)
        raise TimeoutError("timed out")

    v = AssertionVerifier(**options(gw, clock=clock, fetch_jwks=hanging))
    a = gw.assertion(exp=NOW + 1000)
    refused(v, a, "jwks_unavailable")
    assert len(calls) == 1
    started = clock.now
    refused(v, a, "jwks_unavailable")
    assert len(calls) == 1, "answered at once"
    assert clock.now == started


def test_clear_key_cache_forgets_the_keys_so_a_key_retired_at_the_gateway_stops_verifying():
    gw = FakeGateway()
    clock = Clock()
    v = AssertionVerifier(**options(gw, clock=clock))
    a = gw.assertion(exp=NOW + 1000)
    v.verify_assertion(a)
    gw.keys = [Key("EdDSA")]  # retired at once
    clock.advance(10)
    assert v.verify_assertion(a).id == "user-1", "cached: still trusted"
    v.clear_key_cache()
    with pytest.raises(NeedsFetch):
        v.verify_assertion(a, allow_fetch=False)
    refused(v, a, "invalid_assertion", "not in the gateway's JWKS")
    assert gw.fetches == 2
    assert v.verify_assertion(gw.assertion()).id == "user-1"
    assert gw.fetches == 2
    # It also ends a back-off: the JWKS is asked at once.
    gw.failing = True
    v.clear_key_cache()
    refused(v, a, "jwks_unavailable")
    gw.failing = False
    v.clear_key_cache()
    assert v.verify_assertion(gw.assertion()).id == "user-1"
    assert gw.fetches == 4


def test_an_unknown_kid_whose_own_fetch_failed_gets_503_during_the_back_off_not_401():
    gw = FakeGateway()
    clock = Clock()
    v = AssertionVerifier(**options(gw, clock=clock))
    v.verify_assertion(gw.assertion(exp=NOW + 1000))
    gw.failing = True
    stranger = gw.assertion(key=Key("EdDSA"), exp=NOW + 1000)
    refused(v, stranger, "jwks_unavailable")
    assert gw.fetches == 2
    clock.advance(1)
    with pytest.raises(NeedsFetch):
        v.verify_assertion(stranger, allow_fetch=False)
    refused(v, stranger, "jwks_unavailable")
    assert gw.fetches == 2, "no new fetch within the back-off"
    assert v.verify_assertion(gw.assertion(exp=NOW + 1000)).id == "user-1", "known keys still answer"
    gw.failing = False
    clock.advance(4)
    refused(v, stranger, "invalid_assertion", "not in the gateway's JWKS")
    assert gw.fetches == 3, "the back-off over: fetched, and the kid is not there"


class HeldFirstFetch:
    """``gw``'s JWKS as it is when fetched; the first answer waits for ``release``."""

    def __init__(self, gw: FakeGateway) -> None:
        self.gw = gw
        self.started = threading.Event()
        self.release = threading.Event()
        self._held = True

    def __call__(self, url: str):
        doc = self.gw.fetch(url)
        if self._held:
            self._held = False
            self.started.set()
            assert self.release.wait(5)
        return doc


def test_clear_key_cache_during_a_fetch_its_keys_are_not_stored_nor_trusted_by_later_requests():
    gw = FakeGateway()
    old = gw.key
    held = HeldFirstFetch(gw)
    lock = CountingLock()
    v = AssertionVerifier(**options(gw, fetch_jwks=held))
    v._keys._lock = lock
    a = gw.assertion(key=old, exp=NOW + 1000)

    def outcome():
        try:
            v.verify_assertion(a)
            return "verified"
        except PortcullisError as err:
            return f"{err.code}: {err.detail}"

    with ThreadPoolExecutor(2) as pool:
        before = pool.submit(outcome)
        assert held.started.wait(5), "the first fetch, still listing the old key, is under way"
        fresh = Key("EdDSA")
        gw.keys = [fresh]  # the old key retired at once
        v.clear_key_cache()
        after = pool.submit(outcome)
        assert lock.wait_for(2)
        held.release.set()
        refusal = "invalid_assertion: the assertion's key is not in the gateway's JWKS"
        assert after.result() == refusal, "a request after the clear does not take the fetch begun before it"
        assert before.result() == refusal, "the request begun before the clear fetched again too"
    refused(v, a, "invalid_assertion", "not in the gateway's JWKS")
    assert v.verify_assertion(gw.assertion(key=fresh, exp=NOW + 1000)).id == "user-1"


def test_clear_key_cache_during_a_fetch_a_valid_kid_is_fetched_again_not_refused():
    gw = FakeGateway()
    held = HeldFirstFetch(gw)
    v = AssertionVerifier(**options(gw, fetch_jwks=held))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(v.verify_assertion, gw.assertion(exp=NOW + 1000))
        assert held.started.wait(5)
        v.clear_key_cache()
        held.release.set()
        assert pending.result().id == "user-1"
    assert gw.fetches == 2, "the cleared fetch's keys dropped, the JWKS asked again"


def test_a_key_removed_from_the_jwks_stops_verifying_once_the_cache_is_refreshed():
    gw = FakeGateway()
    clock = Clock()
    v = AssertionVerifier(**options(gw, clock=clock, jwks_cache_ttl=60))
    a = gw.assertion(exp=NOW + 1000)
    v.verify_assertion(a)
    gw.keys = [Key("EdDSA")]
    clock.advance(60)
    refused(v, a, "invalid_assertion", "not in the gateway's JWKS")


def test_jwks_unreachable_503_without_keys_and_stale_keys_for_at_most_one_more_period():
    gw = FakeGateway()
    gw.failing = True
    clock = Clock()
    v = AssertionVerifier(**options(gw, clock=clock, jwks_cache_ttl=60))
    a = gw.assertion(exp=NOW + 1000)
    refused(v, a, "jwks_unavailable")
    gw.failing = False
    clock.advance(5)
    v.verify_assertion(a)
    gw.failing = True
    clock.advance(119)
    assert v.verify_assertion(a).id == "user-1"
    clock.advance(1)
    refused(v, a, "jwks_unavailable")


def test_without_fetching_a_needed_fetch_is_signalled_not_done():
    gw = FakeGateway()
    clock = Clock()
    v = AssertionVerifier(**options(gw, clock=clock))
    a = gw.assertion()
    with pytest.raises(NeedsFetch):
        v.verify_assertion(a, allow_fetch=False)
    assert gw.fetches == 0
    v.verify_assertion(a)
    assert v.verify_assertion(a, allow_fetch=False).id == "user-1"
    stranger = gw.assertion(key=Key("EdDSA"))
    refused(v, stranger, "invalid_assertion", "not in the gateway's JWKS")
    # Within the cooldown an unknown kid is refused without I/O.
    with pytest.raises(PortcullisError):
        v.verify_assertion(stranger, allow_fetch=False)
    assert gw.fetches == 2


def test_missing_empty_repeated_oversized_and_malformed_values_are_refused():
    gw = FakeGateway()
    v = AssertionVerifier(**options(gw))
    refused(v, None, "missing_assertion")
    refused(v, "", "missing_assertion")
    refused(v, [], "missing_assertion")
    a = gw.assertion()
    refused(v, [a, a], "invalid_assertion", "more than one")
    refused(v, f"{a}, {a}", "invalid_assertion", "compact")
    refused(v, gw.assertion(pad="x" * 9000), "invalid_assertion", "compact")
    refused(v, "a.b", "invalid_assertion", "compact")
    refused(v, f"Bearer {a}", "invalid_assertion", "compact")
    refused(v, f"{b64url('[1]')}.{b64url(claims())}.AAAA", "invalid_assertion", "compact")
    assert gw.fetches == 0


@pytest.mark.parametrize("over", [{"sub": None}, {"sub": ""}, {"sid": 7}, {"roles": "admin"}, {"roles": [1]}, {"email": None}])
def test_claims_the_identity_needs_must_be_there_and_well_typed(over):
    gw = FakeGateway()
    refused(AssertionVerifier(**options(gw)), gw.assertion(**over), "invalid_assertion", "lacks")


def test_the_default_fetch_reads_the_jwks_over_http_from_the_issuer():
    key = Key("EdDSA")
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            body = json.dumps({"keys": [key.jwk]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        issuer = f"http://127.0.0.1:{server.server_address[1]}"
        v = AssertionVerifier(issuer, AUDIENCE)
        now = int(time.time())
        a = sign("EdDSA", key.private, {"alg": "EdDSA", "kid": key.kid, "typ": TYPE}, claims(iss=issuer, iat=now, exp=now + 60))
        assert v.verify_assertion(a).id == "user-1"
        assert hits == ["/.well-known/jwks.json"]
    finally:
        server.shutdown()
        server.server_close()


def test_options_are_checked_when_the_verifier_is_made():
    with pytest.raises(TypeError, match="issuer"):
        AssertionVerifier("", AUDIENCE)
    with pytest.raises(TypeError, match="audience"):
        AssertionVerifier(ISSUER, [])
    with pytest.raises(TypeError, match="leeway"):
        AssertionVerifier(ISSUER, AUDIENCE, leeway=-1)
    with pytest.raises(TypeError, match="jwks_url"):
        AssertionVerifier(ISSUER, AUDIENCE, jwks_url="file:///etc/passwd")


def test_refusals_carry_problem_bodies_and_challenges_a_token_refresh_is_not_asked_to_cure():
    missing = PortcullisError("missing_assertion", 401, "no header")
    assert missing.www_authenticate == 'Bearer realm="portcullis"'
    bad = PortcullisError("invalid_assertion", 401, 'bad "sig"')
    # The assertion is the gateway's credential: no error="invalid_token", which tells a client
    # a refresh of its own token cures the 401 (packages/client resends on it).
    assert bad.www_authenticate == 'Bearer realm="portcullis"'
    assert PortcullisError("assertion_expired", 401, "expired").www_authenticate == 'Bearer realm="portcullis"'
    assert bad.problem() == {"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": 'bad "sig"', "code": "invalid_assertion"}
    assert 'error="insufficient_scope"' in PortcullisError("insufficient_role", 403, "x").www_authenticate
    assert PortcullisError("jwks_unavailable", 503, "down").www_authenticate is None
