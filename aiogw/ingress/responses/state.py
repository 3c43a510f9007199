"""Stored responses (`responses.store: true`): each Response and the conversation it ends
(chat messages: earlier turns, its input, its output) in the durable store, under its
`resp_...` id, its caller's scope and a TTL. A continuation reads the conversation back;
an expired or another caller's row is never found."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from aiogw.store.base import Store


class StoredResponse:
    __slots__ = ("history", "response")

    def __init__(self, response: bytes, history: list[dict[str, Any]]) -> None:
        self.response, self.history = response, history


class ResponseStore:
    def __init__(self, store: Store, ttl_s: float) -> None:
        self._store, self._ttl_s = store, ttl_s

    async def put(self, owner: str, response: dict[str, Any], history: list[dict[str, Any]]) -> None:
        now = time.time()
        await self._store.transaction(
            [
                # Expired rows go with each write: the table holds about a TTL's worth.
                ("DELETE FROM aiogw_responses WHERE expires_at < ?", (now,)),
                (
                    "INSERT INTO aiogw_responses (id, owner, created_at, expires_at, response, history)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        response["id"],
                        owner,
                        now,
                        now + self._ttl_s,
                        orjson.dumps(response).decode(),
                        orjson.dumps(history).decode(),
                    ),
                ),
            ]
        )

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        row = await self._store.fetchone(
            "SELECT response, history FROM aiogw_responses WHERE id = ? AND owner = ? AND expires_at >= ?",
            (response_id, owner, time.time()),
        )
        if row is None:
            return None
        return StoredResponse(row[0].encode(), orjson.loads(row[1]))

    async def delete(self, owner: str, response_id: str) -> bool:
        n = await self._store.execute(
            "DELETE FROM aiogw_responses WHERE id = ? AND owner = ? AND expires_at >= ?",
            (response_id, owner, time.time()),
        )
        return n > 0


# On the app when `responses.store` is on (set by the server at start), else None.
RESPONSES: web.AppKey[ResponseStore | None] = web.AppKey("responses")
