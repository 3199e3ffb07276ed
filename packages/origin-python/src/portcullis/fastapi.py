"""FastAPI dependencies over the verifier, in the shape of AuthFort's:
``Depends(auth.current_user)``, ``Depends(auth.require_role("admin"))``,
``Depends(auth.require_any_role(["admin", "editor"]))``.

Verification runs on the event loop (a signature check, no I/O) unless the
JWKS must be fetched, which happens in a worker thread.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine, Sequence, Union

import anyio.to_thread
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from ._verify import (
    ASSERTION_HEADER,
    AssertionVerifier,
    NeedsFetch,
    PortcullisError,
    User,
    check_any_role,
    role_list,
)


class PortcullisHTTPException(HTTPException):
    """A refusal as FastAPI's ``HTTPException`` (status, ``WWW-Authenticate``);
    ``Portcullis.install(app)`` renders it as problem+json."""

    def __init__(self, error: PortcullisError) -> None:
        headers = {"Cache-Control": "no-store"}
        if error.www_authenticate is not None:
            headers["WWW-Authenticate"] = error.www_authenticate
        super().__init__(status_code=error.status, detail=error.detail, headers=headers)
        self.error = error


async def problem_handler(request: Request, exc: Exception) -> JSONResponse:
    """Exception handler answering ``PortcullisHTTPException`` with RFC 9457 problem+json."""
    if not isinstance(exc, PortcullisHTTPException):
        raise exc
    return JSONResponse(
        exc.error.problem(),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type="application/problem+json",
    )


class Portcullis(AssertionVerifier):
    """The gateway's assertion as FastAPI dependencies.

    ``auth = Portcullis(issuer="https://auth.example.com", audience="https://api.example.com")``,
    then ``auth.install(app)`` once (problem+json refusals) and
    ``user: User = Depends(auth.current_user)`` in routes.
    """

    def install(self, app: FastAPI) -> None:
        """Answers refusals as problem+json (without it FastAPI's default
        ``{"detail": ...}`` JSON carries the same status and headers)."""
        app.add_exception_handler(PortcullisHTTPException, problem_handler)

    async def current_user(self, request: Request) -> User:
        """Dependency: the user the gateway vouched for, or 401 (503 when the
        gateway's keys cannot be fetched)."""
        values = request.headers.getlist(ASSERTION_HEADER)
        try:
            try:
                return self.verify_assertion(values, allow_fetch=False)
            except NeedsFetch:
                return await anyio.to_thread.run_sync(self.verify_assertion, values)
        except PortcullisError as error:
            raise PortcullisHTTPException(error) from None

    def require_role(self, role: Union[str, Sequence[str]]) -> Callable[..., Coroutine[Any, Any, User]]:
        """Dependency: a user with ``role`` (a list: any one of them), else 403."""
        return self.require_any_role(role_list(role))

    def require_any_role(self, roles: Union[str, Sequence[str]]) -> Callable[..., Coroutine[Any, Any, User]]:
        """Dependency: a user with at least one of ``roles``, else 403."""
        needed = role_list(roles)

        async def dependency(user: User = Depends(self.current_user)) -> User:
            try:
                check_any_role(user, needed)
            except PortcullisError as error:
                raise PortcullisHTTPException(error) from None
            return user

        return dependency
