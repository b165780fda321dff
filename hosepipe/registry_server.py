"""A small Confluent-compatible Schema Registry (REST), for the embedded stack and tests.

No Confluent registry installs without a JVM, and karapace is not on PyPI, so this serves
the subset of the REST API that confluent-kafka's ``SchemaRegistryClient`` and the usual
tools use, for Avro schemas:

- ``POST /subjects/{subject}/versions`` register (idempotent; BACKWARD check by default)
- ``POST /subjects/{subject}`` look a schema up
- ``GET /schemas/ids/{id}``, ``GET /schemas/ids/{id}/subjects``, ``GET /schemas/types``
- ``GET /subjects``, ``GET /subjects/{subject}/versions``,
  ``GET /subjects/{subject}/versions/{version|latest}``, ``DELETE /subjects/{subject}``
- ``GET|PUT /config`` and ``GET|PUT /config/{subject}`` (compatibility level)

Ids are global: the same schema text (JSON-normalized) gets the same id in every subject.
State lives in memory and, when a store file is given, in that JSON file (rewritten
atomically on every change), so the embedded stack keeps ids across restarts.

Run: ``python -m hosepipe.registry_server --port 8081 [--store FILE]`` (binds 127.0.0.1).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hosepipe.schema_compat import compatibility_problems

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
LEVELS = frozenset(
    {
        "NONE",
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
    }
)


class RegistryError(Exception):
    """An error answered as ``{"error_code": ..., "message": ...}``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _normalize(schema_text: str) -> str:
    try:
        return json.dumps(json.loads(schema_text), sort_keys=True, separators=(",", ":"))
    except ValueError as exc:
        raise RegistryError(422, 42201, f"Invalid schema: not JSON: {exc}") from exc


@dataclass
class RegistryState:
    """Schemas by id and subjects as lists of ids (version n = index n-1)."""

    schemas: dict[int, str] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)  # "" = global level
    store: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, store: Path | None) -> RegistryState:
        state = cls(store=store)
        if store is not None and store.exists():
            data = json.loads(store.read_text(encoding="utf-8"))
            state.schemas = {int(k): v for k, v in data["schemas"].items()}
            state.subjects = {k: list(v) for k, v in data["subjects"].items()}
            state.config = dict(data.get("config", {}))
        return state

    def save(self) -> None:
        if self.store is None:
            return
        data = {"schemas": self.schemas, "subjects": self.subjects, "config": self.config}
        tmp = self.store.with_suffix(self.store.suffix + ".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.store)

    def level(self, subject: str | None) -> str:
        if subject and subject in self.config:
            return self.config[subject]
        return self.config.get("", "BACKWARD")

    def id_of(self, normalized: str) -> int | None:
        return next((i for i, text in self.schemas.items() if text == normalized), None)

    def versions(self, subject: str) -> list[int]:
        ids = self.subjects.get(subject)
        if not ids:
            raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
        return ids

    def register(self, subject: str, schema_text: str) -> int:
        normalized = _normalize(schema_text)
        with self.lock:
            existing = self.id_of(normalized)
            ids = self.subjects.setdefault(subject, [])
            if existing is not None and existing in ids:
                return existing
            self._check_compatible(subject, ids, normalized)
            schema_id = existing if existing is not None else max(self.schemas, default=0) + 1
            self.schemas[schema_id] = normalized
            ids.append(schema_id)
            self.save()
            return schema_id

    def _check_compatible(self, subject: str, ids: list[int], normalized: str) -> None:
        level = self.level(subject)
        if level == "NONE" or not ids:
            return
        new = json.loads(normalized)
        olds = ids if level.endswith("_TRANSITIVE") else ids[-1:]
        problems: list[str] = []
        for old_id in olds:
            old = json.loads(self.schemas[old_id])
            if level.startswith(("BACKWARD", "FULL")):
                problems += compatibility_problems(old, new)
            if level.startswith(("FORWARD", "FULL")):
                problems += compatibility_problems(new, old)
        if problems:
            raise RegistryError(
                409,
                409,
                f"Schema being registered is incompatible with an earlier schema for subject "
                f"'{subject}' ({level}): {'; '.join(problems)}",
            )


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=CONTENT_TYPE)


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise RegistryError(422, 42201, f"request body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistryError(422, 42201, "request body must be a JSON object")
    return data


def _schema_text(data: dict[str, Any]) -> str:
    kind = data.get("schemaType", "AVRO")
    if kind != "AVRO":
        raise RegistryError(422, 42201, f"only AVRO schemas are supported, got {kind}")
    if data.get("references"):
        raise RegistryError(422, 42201, "schema references are not supported")
    text = data.get("schema")
    if not isinstance(text, str):
        raise RegistryError(422, 42201, "'schema' (a string) is required")
    return text


def create_app(store: Path | None = None) -> Starlette:
    """The registry as an ASGI app; ``store`` is the JSON file that keeps its state."""
    state = RegistryState.open(store)

    def version_body(subject: str, version: int, schema_id: int) -> dict[str, Any]:
        return {
            "subject": subject,
            "version": version,
            "id": schema_id,
            "schema": state.schemas[schema_id],
        }

    async def root(request: Request) -> Response:
        return _json({})

    async def schema_types(request: Request) -> Response:
        return _json(["AVRO"])

    async def schema_by_id(request: Request) -> Response:
        schema_id = int(request.path_params["id"])
        if schema_id not in state.schemas:
            raise RegistryError(404, 40403, f"Schema {schema_id} not found")
        return _json({"schema": state.schemas[schema_id]})

    async def subjects_of_id(request: Request) -> Response:
        schema_id = int(request.path_params["id"])
        found = sorted(s for s, ids in state.subjects.items() if schema_id in ids)
        if not found:
            raise RegistryError(404, 40403, f"Schema {schema_id} not found")
        return _json(found)

    async def subjects(request: Request) -> Response:
        return _json(sorted(s for s, ids in state.subjects.items() if ids))

    async def register(request: Request) -> Response:
        subject = request.path_params["subject"]
        schema_id = state.register(subject, _schema_text(await _body(request)))
        return _json({"id": schema_id})

    async def lookup(request: Request) -> Response:
        subject = request.path_params["subject"]
        normalized = _normalize(_schema_text(await _body(request)))
        ids = state.versions(subject)
        schema_id = state.id_of(normalized)
        if schema_id is None or schema_id not in ids:
            raise RegistryError(404, 40403, f"Schema not found under subject '{subject}'")
        return _json(version_body(subject, ids.index(schema_id) + 1, schema_id))

    async def delete_subject(request: Request) -> Response:
        subject = request.path_params["subject"]
        with state.lock:
            ids = state.versions(subject)
            del state.subjects[subject]
            state.save()
        return _json(list(range(1, len(ids) + 1)))

    async def versions(request: Request) -> Response:
        ids = state.versions(request.path_params["subject"])
        return _json(list(range(1, len(ids) + 1)))

    async def version(request: Request) -> Response:
        subject = request.path_params["subject"]
        ids = state.versions(subject)
        raw = request.path_params["version"]
        number = len(ids) if raw in {"latest", "-1"} else int(raw) if raw.isdigit() else 0
        if not 1 <= number <= len(ids):
            raise RegistryError(404, 40402, f"Version {raw} not found.")
        return _json(version_body(subject, number, ids[number - 1]))

    async def config(request: Request) -> Response:
        subject = request.path_params.get("subject")
        if request.method == "PUT":
            level = str((await _body(request)).get("compatibility", "")).upper()
            if level not in LEVELS:
                raise RegistryError(422, 42203, f"Invalid compatibility level {level!r}")
            with state.lock:
                state.config[subject or ""] = level
                state.save()
            return _json({"compatibility": level})
        return _json({"compatibilityLevel": state.level(subject)})

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RegistryError)
        return _json({"error_code": exc.code, "message": exc.message}, exc.status)

    routes = [
        Route("/", root),
        Route("/schemas/types", schema_types),
        Route("/schemas/ids/{id:int}", schema_by_id),
        Route("/schemas/ids/{id:int}/subjects", subjects_of_id),
        Route("/subjects", subjects),
        Route("/subjects/{subject}", lookup, methods=["POST"]),
        Route("/subjects/{subject}", delete_subject, methods=["DELETE"]),
        Route("/subjects/{subject}/versions", register, methods=["POST"]),
        Route("/subjects/{subject}/versions", versions, methods=["GET"]),
        Route("/subjects/{subject}/versions/{version}", version),
        Route("/config", config, methods=["GET", "PUT"]),
        Route("/config/{subject}", config, methods=["GET", "PUT"]),
    ]
    return Starlette(routes=routes, exception_handlers={RegistryError: on_error})


def main(argv: list[str] | None = None) -> None:
    """``python -m hosepipe.registry_server``: serve the registry on loopback."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--store", type=Path, default=None, help="JSON file keeping the state")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.store), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
