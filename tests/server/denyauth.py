"""An Authorizer for tests: denies the resource named by the request's X-Test-Deny header."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.authorizer import Authorizer


class HeaderDenies(Authorizer):
    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return handler.request.headers.get("X-Test-Deny") != resource
