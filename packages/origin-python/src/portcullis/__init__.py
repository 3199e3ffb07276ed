"""Verify the Portcullis gateway's ``X-Auth-Assertion`` in a Python origin.

Framework-free: ``AssertionVerifier(...).verify_assertion(header_value)``.
FastAPI: ``Portcullis`` (``from portcullis import Portcullis``; needs
``fastapi``) with the dependencies ``current_user``, ``require_role`` and
``require_any_role``.
"""

from typing import Any

from ._verify import (
    ASSERTION_HEADER,
    ASSERTION_TYPE,
    AssertionVerifier,
    NeedsFetch,
    PortcullisError,
    User,
)

__all__ = [
    "ASSERTION_HEADER",
    "ASSERTION_TYPE",
    "AssertionVerifier",
    "NeedsFetch",
    "Portcullis",
    "PortcullisError",
    "User",
]


def __getattr__(name: str) -> Any:
    # FastAPI is imported only by those who use it.
    if name == "Portcullis":
        from .fastapi import Portcullis

        return Portcullis
    raise AttributeError(f"module 'portcullis' has no attribute {name!r}")
