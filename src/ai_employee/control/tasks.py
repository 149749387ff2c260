"""`GET /tasks` and `GET /tasks/{id}` on the control port: the audit store, read-only.

    GET /tasks?status=failed&since=7d&action=atlas.work_order&limit=50   -> {"tasks": [...]}
    GET /tasks/{id}   (action id, plan id, short id or note file name)   -> one item's story

Reads run in a thread (a database call must not stall the loop); like every route here, the
answers are JSON, errors included.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import Any

from aiohttp import web
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ai_employee.control.server import ControlServer, path_params
from ai_employee.store.database import reason
from ai_employee.store.queries import DEFAULT_LIMIT, BadQuery, list_tasks, parse_since, resolve_item_id, story

_dumps = partial(json.dumps, default=str)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


class TaskRoutes:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, control: ControlServer) -> None:
        control.add_route("GET", "/tasks", self.list)
        control.add_route("GET", "/tasks/{id}", self.one)

    async def list(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
            since = parse_since(query.get("since"))
        except ValueError as error:
            message = str(error) if isinstance(error, BadQuery) else "limit must be a whole number"
            return _json({"error": message}, status=400)
        try:
            found = await asyncio.to_thread(
                list_tasks,
                self.engine,
                status=query.get("status") or None,
                since=since,
                action=query.get("action") or None,
                limit=limit,
            )
        except SQLAlchemyError as error:
            return _json({"error": "the audit store " + reason(error)}, status=503)
        return _json({"tasks": found, "count": len(found)})

    async def one(self, request: web.Request) -> web.StreamResponse:
        wanted = path_params(request)["id"]
        try:
            found = await asyncio.to_thread(self._story, wanted)
        except SQLAlchemyError as error:
            return _json({"error": "the audit store " + reason(error)}, status=503)
        if found is None:
            return _json({"error": "no item with that id", "id": wanted}, status=404)
        return _json(found)

    def _story(self, wanted: str) -> dict[str, Any] | None:
        action_id = resolve_item_id(self.engine, wanted)
        return story(self.engine, action_id) if action_id else None
