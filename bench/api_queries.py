"""GraphQL API benchmark: latency percentiles and requests/s at fixed concurrency.

Loads N events (default 1,000,000) into PostgreSQL, starts ``hosepipe api`` as its own process
and, in the same run, a bare asyncpg + uvicorn handler running the same SQL (the ceiling), then
drives both with wrk (Debian package ``wrk``; an async httpx client when wrk is missing) for
three queries, printing requests/s, latency percentiles and the server's CPU time per request
(the figure that stays comparable on a busy machine):

  (a) first page of a filtered ``events`` query (source + eventType, 50 rows)
  (b) a deep page: 50 rows after a cursor in the middle of the table
  (c) an aggregate: ``eventCounts(groupBy: [SOURCE, EVENT_TYPE])`` over one day

    python bench/api_queries.py                      # 1M rows, embedded PostgreSQL
    python bench/api_queries.py --rows 200000 --duration 10 --concurrency 16
    python bench/api_queries.py --database-url postgresql+psycopg://u:p@127.0.0.1:5432/db
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SOURCES = ["orders", "clicks", "inventory", "payments"]
TYPES = ["created", "paid", "shipped", "viewed", "clicked"]
PIPELINE_YAML = """
sources:
  orders: {kind: push, mapping: {event_id: $.id, occurred_at: $.ts, event_type: $.t}}
api: {auth: none, max_first: 1000, exact_count_limit: 10000, max_cost: 100000}
"""

FIELDS = "eventId source eventType occurredAt ingestedAt subject payload attributes"
Q_FIRST = (
    "query($f: EventFilter) { events(filter: $f, first: 50) "
    f"{{ edges {{ cursor node {{ {FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
)
Q_DEEP = (
    "query($after: String) { events(first: 50, after: $after) "
    f"{{ edges {{ cursor node {{ {FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
)
Q_AGG = (
    "query($f: EventFilter) { eventCounts(groupBy: [SOURCE, EVENT_TYPE], filter: $f) "
    "{ source eventType count } }"
)

COLS = "event_id, source, event_type, occurred_at, ingested_at, subject, payload, attributes"
SQL_FIRST = (
    f"SELECT {COLS} FROM events WHERE source = $1 AND event_type = $2 "
    "ORDER BY occurred_at DESC, event_id DESC LIMIT 51"
)
SQL_DEEP = (
    f"SELECT {COLS} FROM events WHERE (occurred_at, event_id) < ($1, $2) "
    "ORDER BY occurred_at DESC, event_id DESC LIMIT 51"
)
SQL_AGG = (
    "SELECT source, event_type, count(*) FROM events WHERE occurred_at >= $1 AND "
    "occurred_at < $2 GROUP BY source, event_type ORDER BY source, event_type"
)


# --------------------------------------------------------------------------- data


def load_rows(url: str, rows: int) -> None:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE events")
        batch = 100_000
        for start in range(0, rows, batch):
            buf = io.StringIO()
            for i in range(start, min(rows, start + batch)):
                at = T0 + timedelta(seconds=i * 2)
                payload = orjson.dumps(
                    {"id": f"o{i}", "amount": i % 1000 / 10, "customer": {"id": f"c{i % 997}"}}
                ).decode()
                buf.write(
                    f"e{i:09d}\t{SOURCES[i % 4]}\t{TYPES[i % 5]}\t{at.isoformat()}\t"
                    f'{at.isoformat()}\tc{i % 997}\t{payload}\t{{"channel": "web"}}\n'
                )
            buf.seek(0)
            with cur.copy(f"COPY events ({COLS}) FROM STDIN") as copy:
                while chunk := buf.read(1 << 20):
                    copy.write(chunk)
        cur.execute("ANALYZE events")
        conn.commit()


# --------------------------------------------------------------------------- bare handler


def serve_bare(port: int, dsn: str, search_path: str) -> None:
    """Same SQL through asyncpg, JSON by orjson, no GraphQL: the ceiling."""
    import asyncpg
    import uvicorn

    state: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["pool"] = await asyncpg.create_pool(
                        dsn,
                        min_size=4,
                        max_size=10,
                        server_settings={"search_path": search_path},
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await state["pool"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if not body:  # the readiness probe
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        request = orjson.loads(body)
        kind, args = request["kind"], request["args"]
        if kind == "deep":
            args = [datetime.fromisoformat(args[0]), args[1]]
        elif kind == "agg":
            args = [datetime.fromisoformat(a) for a in args]
        sql = {"first": SQL_FIRST, "deep": SQL_DEEP, "agg": SQL_AGG}[kind]
        async with state["pool"].acquire() as conn:
            rows = await conn.fetch(sql, *args)
        out = orjson.dumps([dict(r) for r in rows])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": out})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --------------------------------------------------------------------------- load generator


async def drive(
    url: str, bodies: list[dict[str, Any]], concurrency: int, duration: float
) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker(n: int) -> None:
            nonlocal errors
            i = n
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                response = await client.post(
                    url,
                    content=orjson.dumps(bodies[i % len(bodies)]),
                    headers={"content-type": "application/json"},
                )
                elapsed = time.perf_counter() - started
                if response.status_code != 200 or b'"errors"' in response.content[:20]:
                    errors += 1
                latencies.append(elapsed)
                i += 1

        # Warm-up, then measure.
        await asyncio.gather(
            *(
                client.post(
                    url, content=orjson.dumps(b), headers={"content-type": "application/json"}
                )
                for b in bodies[:4]
            )
        )
        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / wall,
        "p50": q[49] * 1000,
        "p95": q[94] * 1000,
        "p99": q[98] * 1000,
    }


WRK_SCRIPT = """
local threads = {}
setup = function(thread) table.insert(threads, thread) end
bodies = {%s}
i = 0
bad = 0
request = function()
  i = i + 1
  local body = bodies[(i %% #bodies) + 1]
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then bad = bad + 1 end
end
done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  for _, t in ipairs(threads) do errors = errors + t:get("bad") end
  io.write(string.format("WRK %%d %%f %%f %%f %%f %%d\\n", summary.requests,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, errors))
end
"""


def drive_wrk(
    wrk: str, url: str, bodies: list[dict[str, Any]], concurrency: int, duration: float
) -> dict[str, float]:
    """The same measurement with wrk (C, one thread), which leaves the CPU to the servers.

    Counts as errors: socket errors, non-200 answers and GraphQL ``errors`` in a body.
    """
    # Lua long brackets need no escaping (the bodies never contain "]==]").
    lua_bodies = ", ".join(f"[==[{orjson.dumps(b).decode()}]==]" for b in bodies)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % lua_bodies)
    try:
        argv = [wrk, "-t1", f"-c{concurrency}", f"-d{duration:.0f}s", "--timeout", "30s"]
        argv += ["-s", script.name, url]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    line = next(x for x in out.splitlines() if x.startswith("WRK "))
    requests, wall, p50, p95, p99, errors = line.split()[1:]
    return {
        "requests": int(requests),
        "errors": int(errors),
        "rps": int(requests) / float(wall),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=15.0, help="Seconds per scenario.")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "httpx"],
        default="auto",
        help="Load generator: wrk (C, cheap; default when on PATH) or the async httpx client.",
    )
    parser.add_argument(
        "--serve-bare", nargs=3, metavar=("PORT", "DSN", "SCHEMA"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(int(args.serve_bare[0]), args.serve_bare[1], args.serve_bare[2])
        return

    from sqlalchemy import create_engine, text

    from api.events import EventKey, EventOrder, encode_cursor, to_micros
    from hosepipe.config import load_pipeline
    from hosepipe.localstack.servers import free_port, start_postgres
    from selector.schema import upgrade

    workdir = Path(tempfile.mkdtemp(prefix="hosepipe-bench-api-"))
    server = None
    url = args.database_url
    if url is None:
        server = start_postgres(workdir / "pg", free_port(), durable=False)
        url = server.url
    schema = f"bench_api_{os.getpid()}"
    children: list[subprocess.Popen[bytes]] = []
    try:
        with create_engine(url).begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in url else "?"
        schema_url = f"{url}{sep}options=-csearch_path%3D{schema}"
        config = workdir / "hosepipe.yaml"
        config.write_text(PIPELINE_YAML)
        pipeline = load_pipeline(config)
        upgrade(create_engine(schema_url), pipeline.selection)
        started = time.perf_counter()
        load_rows(schema_url, args.rows)
        print(f"loaded {args.rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)

        api_port, bare_port = free_port(), free_port()
        env = {
            **os.environ,
            "HOSEPIPE_DATABASE_URL": schema_url,
            "HOSEPIPE_API_PORT": str(api_port),
            "HOSEPIPE_BIND_HOST": "127.0.0.1",
            "HOSEPIPE_CONFIG_FILE": str(config),
            "HOSEPIPE_LOG_LEVEL": "WARNING",
        }
        children.append(
            subprocess.Popen([sys.executable, "-m", "hosepipe", "api"], env=env, cwd=ROOT)
        )
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        children.append(
            subprocess.Popen(
                [sys.executable, __file__, "--serve-bare", str(bare_port), dsn, schema], cwd=ROOT
            )
        )
        wait_http(f"http://127.0.0.1:{api_port}/healthz")
        wait_http(f"http://127.0.0.1:{bare_port}/")
        pids = {"hosepipe api": children[0].pid, "bare asyncpg": children[1].pid}
        wrk = None if args.client == "httpx" else shutil.which("wrk")
        if args.client == "wrk" and wrk is None:
            raise SystemExit("--client wrk: no wrk on PATH (Debian: apt-get install wrk)")

        mid = args.rows // 2
        mid_at = T0 + timedelta(seconds=mid * 2)
        deep_ids = [mid + k * 997 % max(1, args.rows // 4) for k in range(50)]
        deep_keys = [(T0 + timedelta(seconds=i * 2), f"e{i:09d}") for i in deep_ids]
        day = (T0 + timedelta(seconds=mid), T0 + timedelta(seconds=mid) + timedelta(days=1))
        combos = [(s, t) for s in SOURCES for t in TYPES]
        scenarios = {
            "first page, filtered": (
                [
                    {"query": Q_FIRST, "variables": {"f": {"source": s, "eventType": t}}}
                    for s, t in combos
                ],
                [{"kind": "first", "args": [s, t]} for s, t in combos],
            ),
            "deep page by cursor": (
                [
                    {
                        "query": Q_DEEP,
                        "variables": {
                            "after": encode_cursor(
                                EventKey(EventOrder.OCCURRED_AT_DESC, to_micros(at), eid)
                            )
                        },
                    }
                    for at, eid in deep_keys
                ],
                [{"kind": "deep", "args": [at.isoformat(), eid]} for at, eid in deep_keys],
            ),
            "aggregate (1 day)": (
                [
                    {
                        "query": Q_AGG,
                        "variables": {
                            "f": {
                                "occurredAt": {"gte": day[0].isoformat(), "lt": day[1].isoformat()}
                            }
                        },
                    }
                ],
                [{"kind": "agg", "args": [day[0].isoformat(), day[1].isoformat()]}],
            ),
        }
        _ = mid_at
        print(
            f"\nrows={args.rows:,} concurrency={args.concurrency} "
            f"duration={args.duration:.0f}s/scenario  machine={platform.machine()} "
            f"cpus={os.cpu_count()} python={platform.python_version()}  "
            f"date={datetime.now(UTC):%Y-%m-%d}  client={'wrk' if wrk else 'httpx'}  "
            f"load={' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        print(
            f"{'scenario':<24} {'server':<14} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
            f"{'p99 ms':>8} {'cpu ms':>8} {'errors':>6}"
        )
        for name, (graphql_bodies, bare_bodies) in scenarios.items():
            for label, target, bodies in (
                ("hosepipe api", f"http://127.0.0.1:{api_port}/graphql", graphql_bodies),
                ("bare asyncpg", f"http://127.0.0.1:{bare_port}/", bare_bodies),
            ):
                pid = pids[label]
                # Warm-up (pool, prepared statements, caches) outside the measurement.
                asyncio.run(drive(target, bodies, args.concurrency, 1.0))
                cpu_before = cpu_seconds(pid)
                if wrk:
                    r = drive_wrk(wrk, target, bodies, args.concurrency, args.duration)
                else:
                    r = asyncio.run(drive(target, bodies, args.concurrency, args.duration))
                cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / max(1, r["requests"])
                print(
                    f"{name:<24} {label:<14} {r['rps']:>8.0f} {r['p50']:>8.1f} "
                    f"{r['p95']:>8.1f} {r['p99']:>8.1f} {cpu_ms:>8.2f} {r['errors']:>6}",
                    flush=True,
                )
    finally:
        for child in children:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
