"""POST /gpumarket/api/course/join: "I have a course code" for the picker and the panel.

Body ``{"code": "gpmcode1....", "password": "..."}`` (``password`` only protects a wallet
created for the student, or unlocks one that holds gas to bind the code at once; it is not
kept). Response: ``market.course_join.JoinResult.to_json()``. Errors as the server API says:
400 bad input or a code for a network this server does not know, 409 a code redeemed by
another wallet / revoked / expired, 502 the chain unreachable.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from jupyter_gpumarket.exceptions import ChainError, ConfigError, GpuMarketError, PaymentError

__all__ = ["default_handlers"]

AUTH_RESOURCE = "gpumarket"
MAX_BODY = 8192


class CourseJoinHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    def _fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish(json.dumps({"message": message}))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.request.body or b""
        if len(body) > MAX_BODY:
            return self._fail(400, "the request is too large: send just the course code")
        try:
            data: Any = json.loads(body)
        except ValueError:
            return self._fail(400, 'send JSON: {"code": "<your course code>"}')
        if not isinstance(data, dict) or set(data) - {"code", "password"}:
            return self._fail(400, 'send {"code": "<your course code>"} (and "password")')
        code, password = data.get("code"), data.get("password")
        if not isinstance(code, str) or (password is not None and not isinstance(password, str)):
            return self._fail(400, "code and password are strings")
        from jupyter_gpumarket.market.course_join import join

        try:
            result = await asyncio.to_thread(join, code, password=password)
        except ConfigError as exc:
            return self._fail(400, str(exc))
        except PaymentError as exc:
            return self._fail(409, str(exc))
        except (ChainError, GpuMarketError) as exc:
            return self._fail(502, str(exc))
        self.finish(json.dumps(result.to_json()))


default_handlers = [
    (r"/gpumarket/api/course/join", CourseJoinHandler),
]
