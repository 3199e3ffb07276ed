"""The FastAPI dependencies on a real FastAPI app (TestClient)."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from gateway import FakeGateway, options
from portcullis import Portcullis, User

gw = FakeGateway()
auth = Portcullis(**options(gw))
app = FastAPI()
auth.install(app)


def show(user: User) -> dict:
    return {"id": user.id, "email": user.email, "roles": user.roles, "session_id": user.session_id, "claims": user.claims}


@app.get("/me")
async def me(user: User = Depends(auth.current_user)):
    return show(user)


@app.get("/admin")
async def admin(user: User = Depends(auth.require_role("admin"))):
    return show(user)


@app.get("/manage")
def manage(user: User = Depends(auth.require_any_role(["admin", "editor"]))):
    return show(user)


@app.get("/manage-authfort-style")
def manage_list(user: User = Depends(auth.require_role(["admin", "editor"]))):
    return show(user)


failing = FakeGateway()
failing.failing = True
down = Portcullis(**options(failing))


@app.get("/down")
async def down_route(user: User = Depends(down.current_user)):
    return show(user)


bare = FastAPI()  # no install(): FastAPI's own {"detail"} JSON


@bare.get("/me")
async def bare_me(user: User = Depends(auth.current_user)):
    return show(user)


client = TestClient(app)


def problem(res, status: int, code: str) -> dict:
    assert res.status_code == status, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    body = res.json()
    assert body["code"] == code
    assert body["status"] == status
    return body


def test_a_valid_assertion_gives_current_user():
    res = client.get("/me", headers={"x-auth-assertion": gw.assertion(plan="pro")})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["id"] == "user-1"
    assert body["email"] == "ada@example.com"
    assert body["roles"] == ["editor"]
    assert body["session_id"] == "session-1"
    assert body["claims"]["plan"] == "pro"


def test_no_assertion_401_missing_assertion_with_a_bearer_challenge():
    res = client.get("/me")
    problem(res, 401, "missing_assertion")
    assert res.headers["www-authenticate"] == 'Bearer realm="portcullis"'


def test_bare_x_auth_headers_without_an_assertion_are_refused():
    res = client.get(
        "/admin",
        headers={"x-auth-user-id": "user-1", "x-auth-email": "ada@example.com", "x-auth-roles": "admin", "x-auth-session-id": "s"},
    )
    problem(res, 401, "missing_assertion")


def test_bare_x_auth_headers_never_change_the_identity_of_a_valid_assertion():
    res = client.get("/me", headers={"x-auth-assertion": gw.assertion(), "x-auth-user-id": "someone-else", "x-auth-roles": "admin"})
    assert res.status_code == 200
    assert res.json()["id"] == "user-1"
    assert res.json()["roles"] == ["editor"]


def test_an_invalid_assertion_401_invalid_assertion_with_a_bare_challenge_no_invalid_token():
    h, p, _ = gw.assertion().split(".")
    res = client.get("/me", headers={"x-auth-assertion": f"{h}.{p}.{'A' * 86}"})
    body = problem(res, 401, "invalid_assertion")
    assert "bad signature" in body["detail"]
    # A client's token refresh cannot cure the gateway's assertion: no error="invalid_token".
    assert res.headers["www-authenticate"] == 'Bearer realm="portcullis"'


def test_an_expired_assertion_401_assertion_expired():
    res = client.get("/me", headers={"x-auth-assertion": gw.assertion(iat=1, exp=61)})
    problem(res, 401, "assertion_expired")
    assert res.headers["www-authenticate"] == 'Bearer realm="portcullis"'


def test_two_assertion_headers_are_refused():
    a = gw.assertion()
    res = client.get("/me", headers=[("x-auth-assertion", a), ("x-auth-assertion", a)])
    problem(res, 401, "invalid_assertion")


def test_require_role_403_without_the_role_200_with_it():
    res = client.get("/admin", headers={"x-auth-assertion": gw.assertion()})
    body = problem(res, 403, "insufficient_role")
    assert "admin" in body["detail"]
    assert 'error="insufficient_scope"' in res.headers["www-authenticate"]
    ok = client.get("/admin", headers={"x-auth-assertion": gw.assertion(roles=["admin"])})
    assert ok.status_code == 200
    assert ok.json()["roles"] == ["admin"]


@pytest.mark.parametrize("path", ["/manage", "/manage-authfort-style"])
def test_require_any_role_one_of_the_roles_is_enough(path):
    assert client.get(path, headers={"x-auth-assertion": gw.assertion(roles=["editor"])}).status_code == 200
    assert client.get(path, headers={"x-auth-assertion": gw.assertion(roles=["x", "admin"])}).status_code == 200
    problem(client.get(path, headers={"x-auth-assertion": gw.assertion(roles=["viewer"])}), 403, "insufficient_role")
    problem(client.get(path, headers={"x-auth-assertion": gw.assertion(roles=[])}), 403, "insufficient_role")


def test_jwks_unreachable_503_jwks_unavailable():
    problem(client.get("/down", headers={"x-auth-assertion": gw.assertion()}), 503, "jwks_unavailable")


def test_without_install_fastapi_default_json_keeps_status_and_challenge():
    res = TestClient(bare).get("/me")
    assert res.status_code == 401
    assert res.headers["www-authenticate"] == 'Bearer realm="portcullis"'
    assert "gateway" in res.json()["detail"]


def test_role_arguments_are_checked_when_the_dependency_is_made():
    with pytest.raises(TypeError):
        auth.require_role("")
    with pytest.raises(TypeError):
        auth.require_any_role([])
