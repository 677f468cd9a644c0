"""``Idempotency-Key`` on mutating calls, as ASGI middleware so every route gets it.

The key is claimed before the route runs and the response stored after, both in short
transactions of their own (``core.idempotency``).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from siyu.core import idempotency
from siyu.core.auth import ApiKey, hash_key
from siyu.core.db import Database
from siyu.core.errors import SiyuError

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, db: Database) -> None:
        self.app = app
        self.db = db

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        key = headers.get("idempotency-key")
        if not key:
            await self.app(scope, receive, send)
            return
        api_key_id = self._api_key_id(headers)
        if api_key_id is None:  # unauthenticated: let the route say so
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        req_hash = idempotency.request_hash(scope["method"], scope["path"], body)
        try:
            with self.db.sessions() as session:
                record = idempotency.claim(
                    session, api_key_id=api_key_id, key=key[:200], req_hash=req_hash
                )
                if record is not None:
                    await _send_json(
                        send, record.status_code or 200, record.response_body, replayed=True
                    )
                    return
        except SiyuError as exc:
            await _send_json(send, exc.status, {"error": exc.to_dict()})
            return

        sent = False

        async def replay_receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status = 500
        chunks: list[bytes] = []

        async def capture_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capture_send)
        finally:
            raw = b"".join(chunks)
            try:
                stored: Any = json.loads(raw) if raw else None
            except ValueError:
                stored = raw.decode(errors="replace")
            with self.db.sessions() as session:
                idempotency.finish(
                    session, api_key_id=api_key_id, key=key[:200], status_code=status, body=stored
                )

    def _api_key_id(self, headers: dict[str, str]) -> int | None:
        secret = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            secret = auth[7:].strip()
        if not secret:
            return None
        with self.db.sessions() as session:
            return session.scalar(
                select(ApiKey.id).where(
                    ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None)
                )
            )


async def _send_json(send: Send, status: int, body: Any, *, replayed: bool = False) -> None:
    raw = b"" if status == 204 else json.dumps(body, ensure_ascii=False).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})
