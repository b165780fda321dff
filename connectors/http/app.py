"""The ingest ASGI app: ``POST /v1/sources/{source}/records`` and the Firehose JSON API.

Every record is answered only after Kafka acknowledged it (idempotent producer, acks=all).
Requests are refused with a reason: 400 bad body, 401 no/unknown key, 403 key not allowed for
the source, 404 unknown source, 413 too large, 429/503 with Retry-After when the producer is
saturated. Nothing accepted is dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import KafkaError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.delivery import Delivered, DeliveryProducer, DeliveryResult, Throttled
from connectors.http import firehose
from connectors.http.sigv4 import SignatureError, SignedRequest, verify
from connectors.metrics import BYTES, PRODUCE_SECONDS, RECORDS, REJECTS, REQUESTS
from connectors.records import (
    BodyError,
    RawRecord,
    RecordKey,
    Rejected,
    apply_record_limit,
    key_of_bytes,
    record_key,
    source_allowed,
    split_body,
)
from hosepipe.config import PipelineConfig
from hosepipe.observability import asgi_routes
from hosepipe.settings import Settings
from hosepipe.topics import ensure_topics

RETRY_AFTER_SECONDS = 1
# Above this many unacknowledged records in the producer, new requests are turned away (429)
# before they add to the backlog.
DEFAULT_HIGH_WATER = 150_000


class TooLarge(Exception):
    """The request body is over the configured limit."""


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _error(status: int, code: str, reason: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": code, "reason": reason}, headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (:class:`TooLarge`) as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body has {declared} bytes, more than the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _failure(result: DeliveryResult) -> tuple[str, str] | None:
    if isinstance(result, Delivered):
        return None
    if isinstance(result, Throttled):
        return "ServiceUnavailable", f"not accepted, retry later: {result}"
    if isinstance(result, KafkaError):
        return "DeliveryFailed", f"Kafka did not acknowledge the record: {result.str()}"
    return "DeliveryFailed", str(result)


@dataclass
class IngestService:
    """State shared by the handlers: config, the producer, and the keys."""

    settings: Settings
    pipeline: PipelineConfig
    producer_factory: Callable[[], DeliveryProducer]
    high_water: int = DEFAULT_HIGH_WATER

    def __post_init__(self) -> None:
        self.producer: DeliveryProducer | None = None
        self.started_at = time.time()
        # Compiled once: each push source's record keys (its id), see record_key.
        self.record_keys: dict[str, RecordKey] = {
            name: record_key(name, self.pipeline.sources[name])
            for name in self.pipeline.push_sources()
        }
        ingest = self.pipeline.ingest
        self.api_keys = {k.key: k for k in ingest.api_keys}
        self.firehose_secrets = {k.access_key_id: k.secret_access_key for k in ingest.firehose_keys}
        self.firehose_sources = {k.access_key_id: k.sources for k in ingest.firehose_keys}

    # ------------------------------------------------------------------ delivery

    def _producer(self) -> DeliveryProducer:
        if self.producer is None:
            raise RuntimeError("the ingest producer is not started")
        return self.producer

    def saturated(self) -> bool:
        return self._producer().queued() >= self.high_water

    async def deliver(
        self, source: str, connector: str, records: list[RawRecord]
    ) -> list[DeliveryResult]:
        started = time.perf_counter()
        results = await self._producer().send(
            self.pipeline.raw_topic(source), records, headers=[("hosepipe.via", connector.encode())]
        )
        PRODUCE_SECONDS.labels(connector).observe(time.perf_counter() - started)
        ok = [r for r, res in zip(records, results, strict=True) if isinstance(res, Delivered)]
        if ok:
            RECORDS.labels(source, connector).inc(len(ok))
            BYTES.labels(source, connector).inc(sum(len(r.value) for r in ok))
        for result in results:
            failure = _failure(result)
            if failure:
                REJECTS.labels(source, failure[0]).inc()
        return results

    # ------------------------------------------------------------------ plain endpoint

    def _authorize_bearer(self, request: Request, source: str) -> Response | None:
        if not self.pipeline.ingest.auth:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="hosepipe-ingest"'}
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "Unauthorized", "send 'Authorization: Bearer <api key>'", challenge)
        key = self.api_keys.get(token.strip())
        if key is None:
            return _error(401, "Unauthorized", "the API key is not known", challenge)
        if source in self.pipeline.sources and not source_allowed(key.sources, source):
            name = f" {key.name!r}" if key.name else ""
            return _error(403, "Forbidden", f"API key{name} may not push to source {source!r}")
        return None

    async def plain(self, request: Request) -> Response:
        source = request.path_params["source"]
        response = await self._plain(request, source)
        REQUESTS.labels("http", "records", str(response.status_code)).inc()
        if response.status_code >= 400 and response.status_code != 503:
            REJECTS.labels(source if source in self.pipeline.sources else "-", "request").inc()
        return response

    async def _plain(self, request: Request, source: str) -> Response:
        denied = self._authorize_bearer(request, source)
        if denied is not None:
            return denied
        config = self.pipeline.sources.get(source)
        if config is None or config.kind != "push":
            known = ", ".join(sorted(self.pipeline.push_sources())) or "-"
            return _error(
                404, "UnknownSource", f"no push source {source!r} (push sources: {known})"
            )
        limits = self.pipeline.ingest
        try:
            body = await read_body(request, limits.max_request_bytes)
        except TooLarge as exc:
            return _error(413, "RequestTooLarge", str(exc))
        try:
            items = split_body(body, request.headers.get("content-type"), self.record_keys[source])
        except BodyError as exc:
            return _error(400, "InvalidBody", str(exc))
        if len(items) > limits.max_records_per_request:
            return _error(
                413,
                "TooManyRecords",
                f"{len(items)} records, more than the limit of {limits.max_records_per_request}",
            )
        if self.saturated():
            return _error(
                429,
                "Throttled",
                "the ingest producer is saturated; retry later",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        items = apply_record_limit(items, min(limits.max_record_bytes, config.max_record_bytes))
        accepted = [item for item in items if isinstance(item, RawRecord)]
        delivered = iter(await self.deliver(source, "http", accepted))
        results: list[dict[str, Any]] = []
        failed = throttled = 0
        for index, item in enumerate(items):
            if isinstance(item, Rejected):
                REJECTS.labels(source, item.code).inc()
                results.append({"index": index, "error": item.code, "reason": item.reason})
                failed += 1
                continue
            outcome = next(delivered)
            failure = _failure(outcome)
            if failure is None:
                assert isinstance(outcome, Delivered)
                results.append(
                    {"index": index, "partition": outcome.partition, "offset": outcome.offset}
                )
            else:
                failed += 1
                throttled += isinstance(outcome, Throttled)
                results.append({"index": index, "error": failure[0], "reason": failure[1]})
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if throttled else None
        if throttled and throttled == len(items):
            return _error(
                503, "ServiceUnavailable", "the ingest producer queue is full; retry later", headers
            )
        return _json(
            200,
            {
                "source": source,
                "accepted": len(items) - failed,
                "failed": failed,
                "results": results,
            },
            headers,
        )

    # ------------------------------------------------------------------ Firehose API

    async def firehose(self, request: Request) -> Response:
        operation = "-"
        try:
            operation = firehose.operation_of(request.headers.get("x-amz-target"))
            response = await self._firehose(request, operation)
        except firehose.FirehoseError as exc:
            response = Response(
                exc.body(),
                exc.status,
                {"x-amzn-ErrorType": exc.code, **self._request_id()},
                media_type=firehose.CONTENT_TYPE,
            )
            if exc.status == 503:
                response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            REJECTS.labels("-", exc.code).inc()
        REQUESTS.labels("firehose", operation, str(response.status_code)).inc()
        return response

    @staticmethod
    def _request_id() -> dict[str, str]:
        return {"x-amzn-RequestId": str(uuid.uuid4())}

    def _ok(self, document: dict[str, Any]) -> Response:
        return Response(
            orjson.dumps(document), 200, self._request_id(), media_type=firehose.CONTENT_TYPE
        )

    async def _firehose(self, request: Request, operation: str) -> Response:
        limits = self.pipeline.ingest
        # base64 grows the payload by 4/3; leave room for the JSON around it.
        try:
            body = await read_body(request, limits.max_request_bytes * 4 // 3 + 64 * 1024)
        except TooLarge as exc:
            raise firehose.FirehoseError("InvalidArgumentException", str(exc), 413) from exc
        allowed: list[str] = ["*"]
        if limits.auth:
            access_key = self._verify_signature(request, body)
            allowed = self.firehose_sources[access_key]
        document = firehose.parse_json(body)
        pushable = [name for name in self.pipeline.push_sources() if source_allowed(allowed, name)]
        if operation == "ListDeliveryStreams":
            return self._ok(firehose.list_streams(pushable, document))
        stream = document.get("DeliveryStreamName")
        if not isinstance(stream, str) or stream not in self.pipeline.push_sources():
            raise firehose.FirehoseError(
                "ResourceNotFoundException",
                f"Firehose {stream} under account {firehose.ACCOUNT} not found.",
            )
        if stream not in pushable:
            raise firehose.FirehoseError(
                "AccessDeniedException",
                f"the access key may not write to delivery stream {stream!r}",
                403,
            )
        if operation == "DescribeDeliveryStream":
            return self._ok(firehose.describe(stream, limits.region, self.started_at))
        config = self.pipeline.sources[stream]
        put = firehose.parse_put(
            operation,
            document,
            max_records=limits.max_records_per_request,
            max_record_bytes=min(limits.max_record_bytes, config.max_record_bytes),
            max_request_bytes=limits.max_request_bytes,
        )
        if self.saturated():
            raise firehose.FirehoseError("ServiceUnavailableException", "Slow down.", 503)
        key = self.record_keys[stream]
        records = [RawRecord(data, key_of_bytes(data, key)) for data in put.records]
        results = await self.deliver(stream, "firehose", records)
        if operation == "PutRecord":
            outcome = results[0]
            if not isinstance(outcome, Delivered):
                raise firehose.FirehoseError(
                    "ServiceUnavailableException", (_failure(outcome) or ("", ""))[1], 503
                )
            return self._ok(
                {
                    "RecordId": firehose.record_id(outcome.partition, outcome.offset, stream),
                    "Encrypted": False,
                }
            )
        responses: list[dict[str, str]] = []
        failed = throttled = 0
        for outcome in results:
            if isinstance(outcome, Delivered):
                responses.append(
                    {"RecordId": firehose.record_id(outcome.partition, outcome.offset, stream)}
                )
                continue
            failed += 1
            throttled += isinstance(outcome, Throttled)
            code = (
                "ServiceUnavailableException"
                if isinstance(outcome, Throttled)
                else ("InternalFailure")
            )
            responses.append(
                {"ErrorCode": code, "ErrorMessage": (_failure(outcome) or ("", ""))[1]}
            )
        if throttled == len(results):
            raise firehose.FirehoseError("ServiceUnavailableException", "Slow down.", 503)
        return self._ok(
            {"FailedPutCount": failed, "Encrypted": False, "RequestResponses": responses}
        )

    def _verify_signature(self, request: Request, body: bytes) -> str:
        host = request.headers.get("host", "")
        signed = SignedRequest(
            method=request.method,
            scheme=request.url.scheme,
            host=host,
            path=request.scope.get("raw_path", b"/").decode("latin-1") or "/",
            query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
            body=body,
        )
        try:
            return verify(
                signed,
                self.firehose_secrets,
                region=self.pipeline.ingest.region,
                service="firehose",
                max_skew=self.pipeline.ingest.signature_max_skew,
                now=datetime.now(UTC),
            )
        except SignatureError as exc:
            raise firehose.FirehoseError(exc.code, exc.message, 403) from exc

    # ------------------------------------------------------------------ health

    async def health(self) -> dict[str, Any]:
        producer = self.producer
        if producer is None:
            return {"ok": False, "reason": "producer not started"}
        queued = producer.queued()
        return {"ok": True, "queued": queued, "saturated": queued >= self.high_water}


def build_app(
    settings: Settings,
    pipeline: PipelineConfig,
    producer_factory: Callable[[], DeliveryProducer] | None = None,
) -> Starlette:
    """The ingest ASGI app; the producer is created at startup and flushed at shutdown."""
    factory = producer_factory or (
        lambda: DeliveryProducer.from_settings(settings, "hosepipe-ingest")
    )
    service = IngestService(settings, pipeline, factory)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Produce must never auto-create a raw topic with broker defaults.
        await asyncio.to_thread(ensure_topics, settings, pipeline)
        service.producer = service.producer_factory()
        try:
            yield
        finally:
            producer, service.producer = service.producer, None
            if producer is not None:
                producer.close()

    routes = [
        Route("/v1/sources/{source}/records", service.plain, methods=["POST"]),
        Route("/", service.firehose, methods=["POST"]),
        *asgi_routes(service.health),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return app
