"""``hosepipe up``: the embedded stack and every component, supervised until Ctrl-C.

Order: S3 (SeaweedFS) -> broker (Tansu; its topics in S3 or in memory) -> PostgreSQL ->
topics -> components as child processes ``python -m hosepipe <command>``. A crashed
component is restarted with exponential backoff; a crashed server ends the stack. On
SIGINT/SIGTERM everything is stopped in reverse order. ``<data_dir>/stack.json`` records
what runs (pids, ports, start time) for ``hosepipe status`` and to refuse a second stack on
the same data directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from hosepipe.localstack.dashboard import LiveCounters
from hosepipe.localstack.servers import (
    LOOPBACK,
    BrokerS3Storage,
    BrokerServer,
    PostgresServer,
    S3Server,
    ServerProcess,
    StackError,
    free_port,
    log_tail,
    pid_alive,
    require_free_port,
    s3_client,
    start_broker,
    start_postgres,
    start_s3,
    stop_process,
)
from hosepipe.settings import Settings

__all__ = [
    "COMPONENTS",
    "ComponentSpec",
    "ComponentStatus",
    "StackError",
    "print_status",
    "run_stack",
    "stack_status",
]

log = logging.getLogger("hosepipe.localstack")

STATE_FILE = "stack.json"
BROKER_BUCKET = "tansu"
DEFAULT_S3_ACCESS_KEY = "hosepipe"
DEFAULT_S3_SECRET_KEY = "hosepipe-secret"
BACKOFF_MIN = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a child that ran this long has its backoff reset
CHILD_STOP_TIMEOUT = 10.0


# --------------------------------------------------------------------------- components


@dataclass(frozen=True)
class ComponentSpec:
    """One component child process: ``python -m hosepipe <args...>``.

    ``module`` must be importable for the component to run (else it is skipped with one
    log line); ``port_setting`` names a Settings field whose port must be free first.
    A ``oneshot`` step (e.g. migrations) runs to completion before the long-running
    components start; its failure stops the stack.
    """

    name: str
    args: tuple[str, ...]
    module: str
    env: Mapping[str, str] = field(default_factory=dict)
    demo_only: bool = False
    port_setting: str | None = None
    oneshot: bool = False

    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False


# What `hosepipe up` runs, in start order. Edit freely.
COMPONENTS: tuple[ComponentSpec, ...] = (
    ComponentSpec("db-upgrade", ("db", "upgrade"), "selector.schema", oneshot=True),
    ComponentSpec("ingest", ("ingest",), "connectors.http.server", port_setting="ingest_port"),
    ComponentSpec("poll", ("poll",), "connectors.pull.runner"),
    ComponentSpec("worker", ("worker",), "streams.cli"),
    ComponentSpec("sink", ("sink",), "sink.cli"),
    ComponentSpec("select", ("select", "--follow", "--no-progress"), "selector.cli"),
    ComponentSpec("api", ("api",), "api.cli", port_setting="api_port"),
    ComponentSpec("demo", ("demo",), "hosepipe.demo", demo_only=True),
)


def next_backoff(previous: float | None, ran_for: float) -> float:
    """Delay before restarting a child that exited after running ``ran_for`` seconds.

    Doubles from 1 s up to 30 s; a child that ran stably for 60 s starts over at 1 s.
    """
    if previous is None or ran_for >= STABLE_AFTER:
        return BACKOFF_MIN
    return min(previous * 2, BACKOFF_MAX)


def select_components(
    specs: Sequence[ComponentSpec], demo: bool
) -> tuple[list[ComponentSpec], list[ComponentSpec]]:
    """(to run, skipped because their module is not importable)."""
    wanted = [spec for spec in specs if demo or not spec.demo_only]
    run = [spec for spec in wanted if spec.available()]
    return run, [spec for spec in wanted if spec not in run]


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class StackPlan:
    """Where the embedded servers live and what the components are told (pure data)."""

    data_dir: Path
    broker_port: int
    s3_port: int
    postgres_port: int
    s3_access_key: str
    s3_secret_key: str
    s3_region: str
    pg_user: str
    pg_password: str
    pg_database: str
    broker_storage: Literal["s3", "memory"]
    lake_bucket: str | None  # a bucket to create when the lake is s3://

    @property
    def s3_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.broker_port}"

    @property
    def database_url(self) -> str:
        from urllib.parse import quote

        return (
            f"postgresql+psycopg://{quote(self.pg_user, safe='')}:"
            f"{quote(self.pg_password, safe='')}@{LOOPBACK}:{self.postgres_port}/{self.pg_database}"
        )


EMBEDDED_LAKE_URL = "s3://lake/"


def embedded_lake_url(settings: Settings) -> str:
    """The lake of the embedded stack: the embedded S3 unless HOSEPIPE_LAKE_URL says otherwise."""
    return settings.lake_url if "lake_url" in settings.model_fields_set else EMBEDDED_LAKE_URL


def plan_stack(settings: Settings) -> StackPlan:
    """Derive the embedded stack from settings.

    Credentials come from the settings (``HOSEPIPE_S3_*``, user/password/database of
    ``HOSEPIPE_DATABASE_URL``) so that components and external clients agree with the
    servers; ports from ``HOSEPIPE_BROKER_PORT``/``S3_PORT``/``POSTGRES_PORT``.
    """
    db = urlparse(settings.database_url)
    lake = urlparse(embedded_lake_url(settings))
    secret = settings.s3_secret_access_key
    return StackPlan(
        data_dir=settings.data_dir.resolve(),
        broker_port=settings.broker_port,
        s3_port=settings.s3_port,
        postgres_port=settings.postgres_port,
        s3_access_key=settings.s3_access_key_id or DEFAULT_S3_ACCESS_KEY,
        s3_secret_key=secret.get_secret_value() if secret else DEFAULT_S3_SECRET_KEY,
        s3_region=settings.s3_region,
        pg_user=db.username or "hosepipe",
        pg_password=db.password or "hosepipe",
        pg_database=(db.path or "/hosepipe").lstrip("/") or "hosepipe",
        broker_storage=settings.embedded_broker_storage,
        lake_bucket=lake.netloc if lake.scheme == "s3" else None,
    )


def component_settings(settings: Settings, plan: StackPlan, config_file: Path) -> Settings:
    """The settings every component child gets: pointed at the embedded servers."""
    return settings.model_copy(
        update={
            "config_file": config_file.resolve(),
            "data_dir": plan.data_dir,
            "kafka_bootstrap": plan.kafka_bootstrap,
            "s3_endpoint_url": plan.s3_endpoint,
            "s3_access_key_id": plan.s3_access_key,
            "s3_secret_access_key": _secret(plan.s3_secret_key),
            "database_url": plan.database_url,
            "lake_url": embedded_lake_url(settings),
            # One metrics port cannot serve several processes; HTTP components keep theirs.
            "metrics_port": 0,
        }
    )


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def settings_env(settings: Settings) -> dict[str, str]:
    """``HOSEPIPE_*`` variables that make a child process build exactly ``settings``."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="python").items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        text = json.dumps(value) if isinstance(value, dict) else str(value)
        env[f"HOSEPIPE_{name.upper()}"] = text
    return env


# --------------------------------------------------------------------------- state file


def state_path(data_dir: Path) -> Path:
    return data_dir / STATE_FILE


def _start_ticks(pid: int) -> int | None:
    """Kernel start time of ``pid`` (guards against a recycled pid), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[-1].split()[19])


def _same_process_alive(pid: int | None, ticks: int | None) -> bool:
    if not pid or not pid_alive(pid):
        return False
    return ticks is None or _start_ticks(pid) in (None, ticks)


def read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(state_path(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return state


def _write_state(data_dir: Path, state: Mapping[str, Any]) -> None:
    path = state_path(data_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(path)


def running_pids(state: Mapping[str, Any]) -> list[int]:
    """Pids recorded in ``state`` that are still the same processes."""
    records = [state.get("supervisor", {}), *state.get("processes", [])]
    return [
        int(r["pid"])
        for r in records
        if r.get("pid") and _same_process_alive(int(r["pid"]), r.get("start_ticks"))
    ]


@dataclass(frozen=True)
class ComponentStatus:
    """One line of ``hosepipe status``."""

    name: str
    kind: str  # supervisor | server | component
    pid: int | None
    alive: bool
    detail: str


def stack_status(settings: Settings) -> list[ComponentStatus]:
    """What the stack under ``settings.data_dir`` runs; empty when no state file exists."""
    state = read_state(settings.data_dir.resolve())
    if state is None:
        return []
    rows: list[ComponentStatus] = []
    sup = state.get("supervisor", {})
    rows.append(
        ComponentStatus(
            name="hosepipe up",
            kind="supervisor",
            pid=sup.get("pid"),
            alive=_same_process_alive(sup.get("pid"), sup.get("start_ticks")),
            detail=f"started {sup.get('started_at', '?')}, ready={state.get('ready', False)}",
        )
    )
    for record in state.get("processes", []):
        pid = record.get("pid")
        rows.append(
            ComponentStatus(
                name=record["name"],
                kind=record["kind"],
                pid=pid,
                alive=_same_process_alive(pid, record.get("start_ticks")),
                detail=record.get("detail", ""),
            )
        )
    return rows


# What a client on this machine needs to reach the embedded stack (no ports or paths of
# the supervisor itself, no log settings).
CLIENT_SETTINGS = (
    "kafka_bootstrap",
    "schema_registry_url",
    "lake_url",
    "s3_endpoint_url",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_region",
    "database_url",
    "ingest_port",
    "api_port",
    "config_file",
)


def client_env(settings: Settings) -> dict[str, str]:
    """``HOSEPIPE_*`` variables that point a CLI command at the running embedded stack."""
    env = settings_env(settings)
    return {
        key: value
        for key, value in env.items()
        if key.removeprefix("HOSEPIPE_").lower() in CLIENT_SETTINGS
    }


def print_client_env(settings: Settings) -> int:
    """Print ``export HOSEPIPE_...=...`` lines for the running stack; 1 when none runs."""
    import shlex

    state = read_state(settings.data_dir.resolve())
    rows = stack_status(settings)
    if not state or not rows or not rows[0].alive:
        print(f"# no embedded stack is running from {settings.data_dir.resolve()}")
        return 1
    for key, value in state.get("client_env", {}).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def print_status(settings: Settings) -> int:
    """Print :func:`stack_status` as a table; 0 when the stack runs, 1 otherwise."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = stack_status(settings)
    if not rows:
        console.print(f"no embedded stack is running from {settings.data_dir.resolve()}")
        return 1
    table = Table(title=f"hosepipe stack in {settings.data_dir.resolve()}")
    for column in ("name", "kind", "pid", "state", "detail"):
        table.add_column(column)
    for row in rows:
        shown = "[green]running[/]" if row.alive else "[red]stopped[/]"
        table.add_row(row.name, row.kind, str(row.pid or "-"), shown, row.detail)
    console.print(table)
    state = read_state(settings.data_dir.resolve()) or {}
    for name, value in state.get("endpoints", {}).items():
        console.print(f"  {name}: {value}", highlight=False)
    return 0 if rows[0].alive else 1


def refuse_if_running(data_dir: Path) -> None:
    """Raise when a stack recorded in ``data_dir`` still runs.

    When only its supervisor is gone (killed with SIGKILL), the servers and components it
    left behind are stopped instead: they are verified by pid *and* start time, so a
    recycled pid is never signalled.
    """
    state = read_state(data_dir)
    if state is None:
        return
    sup = state.get("supervisor", {})
    if _same_process_alive(sup.get("pid"), sup.get("start_ticks")):
        raise StackError(
            f"an embedded stack from {data_dir} is still running (supervisor pid "
            f"{sup['pid']}); stop it with Ctrl-C in its terminal or `kill {sup['pid']}`, "
            "or use another HOSEPIPE_DATA_DIR"
        )
    leftovers = running_pids(state)
    if leftovers:
        log.warning(
            "the stack that last ran from %s was killed; stopping what it left running: pids %s",
            data_dir,
            leftovers,
        )
        stop_leftovers(leftovers)
    state_path(data_dir).unlink(missing_ok=True)


def stop_leftovers(pids: Sequence[int], timeout: float = CHILD_STOP_TIMEOUT) -> None:
    """SIGTERM ``pids`` (each leads its own process group), wait, then SIGKILL the groups."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    still = [p for p in pids if pid_alive(p)]
    if still:
        raise StackError(f"could not stop the previous stack's processes {still}")


# --------------------------------------------------------------------------- children


@dataclass
class Child:
    """A supervised component process and its restart bookkeeping."""

    spec: ComponentSpec
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float | None = None
    restart_at: float | None = None
    restarts: int = 0
    metrics_port: int | None = None  # this child's /metrics, assigned by the supervisor

    def start(self, base_env: Mapping[str, str]) -> None:
        env = {**os.environ, **base_env, **self.spec.env}
        if self.metrics_port is not None:
            env["HOSEPIPE_METRICS_PORT"] = str(self.metrics_port)
        argv = [sys.executable, "-m", "hosepipe", *self.spec.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops us
            )
        self.started = time.monotonic()
        self.restart_at = None
        log.info("started %s (pid %d)", self.spec.name, self.process.pid)

    def poll(self, now: float) -> None:
        """Notice an exit and schedule the restart."""
        if self.process is None or self.restart_at is not None:
            return
        code = self.process.poll()
        if code is None:
            return
        ran_for = now - self.started
        self.backoff = next_backoff(self.backoff, ran_for)
        self.restart_at = now + self.backoff
        log.warning(
            "%s exited with code %s after %.1f s; restarting in %.0f s; log %s:\n%s",
            self.spec.name,
            code,
            ran_for,
            self.backoff,
            self.log_path,
            log_tail(self.log_path, 8),
        )

    def stop(self, timeout: float = CHILD_STOP_TIMEOUT) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGTERM, timeout)


def stop_children(children: Sequence[Child]) -> None:
    """SIGTERM all at once, give them one shared grace period, then SIGKILL the rest."""
    for child in children:
        if child.process is not None and child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + CHILD_STOP_TIMEOUT
    for child in reversed(children):
        child.stop(max(0.1, deadline - time.monotonic()))


# --------------------------------------------------------------------------- the stack


@dataclass
class RunningServers:
    s3: S3Server | None = None
    broker: BrokerServer | None = None
    postgres: PostgresServer | None = None

    def in_stop_order(self) -> list[tuple[str, ServerProcess]]:
        started = [("s3", self.s3), ("broker", self.broker), ("postgres", self.postgres)]
        return [(name, s.server) for name, s in reversed(started) if s is not None]


def start_servers(plan: StackPlan, servers: RunningServers) -> None:
    """Start S3, the broker and PostgreSQL into ``servers`` (filled as they come up)."""
    # Check every port first, so a conflict is reported before anything starts.
    require_free_port(plan.s3_port, "HOSEPIPE_S3_PORT")
    require_free_port(plan.broker_port, "HOSEPIPE_BROKER_PORT")
    require_free_port(plan.postgres_port, "HOSEPIPE_POSTGRES_PORT")
    buckets = [BROKER_BUCKET]
    if plan.lake_bucket and plan.lake_bucket not in buckets:
        buckets.insert(0, plan.lake_bucket)
    began = time.monotonic()
    servers.s3 = start_s3(
        plan.data_dir / "s3",
        plan.s3_port,
        plan.s3_access_key,
        plan.s3_secret_key,
        buckets,
        region=plan.s3_region,
    )
    log.info("S3 ready on %s in %.2f s", plan.s3_endpoint, time.monotonic() - began)
    began = time.monotonic()
    storage = None
    if plan.broker_storage == "s3":
        storage = BrokerS3Storage(
            bucket=BROKER_BUCKET,
            endpoint_url=plan.s3_endpoint,
            access_key=plan.s3_access_key,
            secret_key=plan.s3_secret_key,
            region=plan.s3_region,
        )
    servers.broker = start_broker(plan.data_dir / "broker", plan.broker_port, s3=storage)
    log.info(
        "broker ready on %s (%s storage) in %.2f s",
        plan.kafka_bootstrap,
        plan.broker_storage,
        time.monotonic() - began,
    )
    began = time.monotonic()
    servers.postgres = start_postgres(
        plan.data_dir / "postgres",
        plan.postgres_port,
        user=plan.pg_user,
        password=plan.pg_password,
        database=plan.pg_database,
    )
    log.info(
        "PostgreSQL ready on %s:%d in %.2f s",
        LOOPBACK,
        plan.postgres_port,
        time.monotonic() - began,
    )


def start_broker_trim(
    settings: Settings, plan: StackPlan, config_file: Path, stop: threading.Event
) -> threading.Thread | None:
    """Trim the broker's topics in S3 in a background thread (s3 storage only)."""
    every = settings.embedded_broker_trim_every
    if plan.broker_storage != "s3" or every <= 0:
        return None
    from hosepipe.config import load_pipeline
    from hosepipe.localstack.broker_trim import BrokerTrimmer

    s3 = s3_client(plan.s3_endpoint, plan.s3_access_key, plan.s3_secret_key, plan.s3_region)
    trimmer = BrokerTrimmer.for_pipeline(settings, load_pipeline(config_file), s3, BROKER_BUCKET)
    thread = threading.Thread(
        target=trimmer.run, args=(stop, every), name="broker-trim", daemon=True
    )
    thread.start()
    log.info(
        "broker trim every %.0f s (consumed records kept %.0f s)",
        every,
        settings.embedded_broker_keep,
    )
    return thread


def create_topics(settings: Settings, config_file: Path) -> None:
    """Run the pipeline's topic creation hook, if it exists yet."""
    try:
        from hosepipe.topics import ensure_topics
    except ImportError:
        log.info("hosepipe.topics.ensure_topics not available; topics not created")
        return
    from hosepipe.config import ConfigError, load_pipeline

    try:
        pipeline = load_pipeline(config_file)
    except ConfigError as exc:
        raise StackError(str(exc)) from exc
    began = time.monotonic()
    deadline = began + 30
    while True:
        try:
            ensure_topics(settings, pipeline)
            log.info("topics ready in %.2f s", time.monotonic() - began)
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise StackError(f"creating topics on {settings.kafka_bootstrap}: {exc}") from exc
            time.sleep(0.5)


def endpoints(settings: Settings, plan: StackPlan, components: Sequence[str]) -> dict[str, str]:
    rows = {
        "Kafka bootstrap": f"{plan.kafka_bootstrap} (storage: {plan.broker_storage})",
        "S3 endpoint": plan.s3_endpoint,
        "S3 access key / secret": f"{plan.s3_access_key} / {plan.s3_secret_key}",
        "PostgreSQL": plan.database_url,
        "Lake": settings.lake_url,
    }
    if "ingest" in components:
        rows["HTTP ingest"] = f"http://{settings.bind_host}:{settings.ingest_port}/v1/sources/"
    if "api" in components:
        rows["GraphQL"] = f"http://{settings.bind_host}:{settings.api_port}/graphql"
    rows["Data and logs"] = str(plan.data_dir)
    return rows


def metrics_urls(settings: Settings, children: Sequence[Child]) -> dict[str, str]:
    """Where each running component serves /metrics (HTTP services on their own port)."""
    urls: dict[str, str] = {}
    for child in children:
        if child.metrics_port is not None:
            urls[child.spec.name] = f"http://{LOOPBACK}:{child.metrics_port}/metrics"
        elif child.spec.port_setting is not None:
            port = getattr(settings, child.spec.port_setting)
            urls[child.spec.name] = f"http://{LOOPBACK}:{port}/metrics"
    return urls


def _print_endpoints(rows: Mapping[str, str], seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hosepipe embedded stack ready in {seconds:.1f} s (Ctrl-C stops it)")
    table.add_column("what")
    table.add_column("where", overflow="fold")
    for name, value in rows.items():
        table.add_row(name, value)
    Console().print(table)


@contextlib.contextmanager
def _stop_signals(stop: threading.Event) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into ``stop`` while the stack runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        if not stop.is_set():
            log.info("received %s, stopping the stack", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _process_record(
    name: str, kind: str, process: subprocess.Popen[bytes] | None, detail: str, log: Path
) -> dict[str, Any]:
    pid = process.pid if process is not None and process.poll() is None else None
    return {
        "name": name,
        "kind": kind,
        "pid": pid,
        "start_ticks": _start_ticks(pid) if pid else None,
        "detail": detail,
        "log": str(log),
    }


def run_stack(
    settings: Settings,
    pipeline_config_path: Path,
    demo: bool = False,
    *,
    components: Sequence[ComponentSpec] = COMPONENTS,
    stop: threading.Event | None = None,
    on_ready: Callable[[dict[str, str]], None] | None = None,
) -> int:
    """Run the embedded stack and the components until SIGINT/SIGTERM (or ``stop`` is set).

    Returns the exit code: 0 after a requested stop, 1 when a server died. Raises
    :class:`StackError` when the stack cannot start (busy port, server not ready, a stack
    already running from the same data directory, invalid pipeline file).
    """
    plan = plan_stack(settings)
    stop = stop or threading.Event()
    plan.data_dir.mkdir(parents=True, exist_ok=True)
    refuse_if_running(plan.data_dir)
    config_file = pipeline_config_path.resolve()
    child_settings = component_settings(settings, plan, config_file)
    to_run, skipped = select_components(components, demo)
    for spec in skipped:
        log.info("component %s skipped: module %s is not importable yet", spec.name, spec.module)
    for spec in to_run:
        if spec.port_setting:
            port = int(getattr(child_settings, spec.port_setting))
            require_free_port(port, f"HOSEPIPE_{spec.port_setting.upper()}")

    began = time.monotonic()
    servers = RunningServers()
    steps = [Child(s, plan.data_dir / "logs" / f"{s.name}.log") for s in to_run if s.oneshot]
    children = [Child(s, plan.data_dir / "logs" / f"{s.name}.log") for s in to_run if not s.oneshot]
    supervisor = {
        "pid": os.getpid(),
        "start_ticks": _start_ticks(os.getpid()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    rows = endpoints(child_settings, plan, [spec.name for spec in to_run])

    def save_state(ready: bool) -> None:
        records = []
        details = {
            "s3": (servers.s3, f"{plan.s3_endpoint}"),
            "broker": (servers.broker, f"{plan.kafka_bootstrap} ({plan.broker_storage})"),
            "postgres": (servers.postgres, f"{LOOPBACK}:{plan.postgres_port}"),
        }
        for name, (server, detail) in details.items():
            if server is not None:
                records.append(
                    _process_record(
                        name, "server", server.server.process, detail, server.server.log_path
                    )
                )
        for child in children:
            detail = " ".join(child.spec.args) + (
                f", {child.restarts} restart(s)" if child.restarts else ""
            )
            records.append(
                _process_record(child.spec.name, "component", child.process, detail, child.log_path)
            )
        _write_state(
            plan.data_dir,
            {
                "supervisor": supervisor,
                "ready": ready,
                "ports": {
                    "broker": plan.broker_port,
                    "s3": plan.s3_port,
                    "postgres": plan.postgres_port,
                },
                "endpoints": rows,
                "client_env": client_env(child_settings),
                "processes": records,
            },
        )

    for child in children:
        if child.spec.port_setting is None and not child.spec.demo_only:
            child.metrics_port = free_port()
    counters: LiveCounters | None = None
    trim_stop = threading.Event()  # also set when a dead server ends the stack
    code = 0
    with _stop_signals(stop):
        try:
            save_state(ready=False)
            start_servers(plan, servers)
            save_state(ready=False)
            if stop.is_set():
                return 0
            create_topics(child_settings, config_file)
            ready_after = time.monotonic() - began
            log.info("embedded stack ready in %.2f s", ready_after)
            base_env = settings_env(child_settings)
            for step in steps:
                if not _run_step(step, base_env, stop):
                    return 0
            for child in children:
                child.start(base_env)
            start_broker_trim(child_settings, plan, config_file, trim_stop)
            save_state(ready=True)
            _print_endpoints(rows, ready_after)
            if on_ready is not None:
                on_ready(rows)
            counters = LiveCounters(metrics_urls(child_settings, children))
            counters.start()
            code = _supervise(children, servers, base_env, stop, save_state)
        finally:
            trim_stop.set()
            if counters is not None:
                counters.stop()
            stop_children(children)
            for name, process in servers.in_stop_order():
                log.info("stopping %s (pid %d)", name, process.pid)
                process.stop()
            state_path(plan.data_dir).unlink(missing_ok=True)
    return code


def _run_step(step: Child, base_env: Mapping[str, str], stop: threading.Event) -> bool:
    """Run a oneshot step to completion; False when a stop was requested meanwhile."""
    began = time.monotonic()
    step.start(base_env)
    assert step.process is not None
    while step.process.poll() is None:
        if stop.wait(0.2):
            step.stop()
            return False
    code = step.process.returncode
    if code != 0:
        raise StackError(
            f"{step.spec.name} (hosepipe {' '.join(step.spec.args)}) failed with exit code "
            f"{code}; last lines of {step.log_path}:\n{log_tail(step.log_path)}"
        )
    log.info("%s done in %.2f s", step.spec.name, time.monotonic() - began)
    return True


def _supervise(
    children: list[Child],
    servers: RunningServers,
    base_env: Mapping[str, str],
    stop: threading.Event,
    save_state: Callable[[bool], None],
) -> int:
    while not stop.wait(0.5):
        for name, process in servers.in_stop_order():
            if not process.alive():
                log.error(
                    "%s exited with code %s; stopping the stack. Last lines of %s:\n%s",
                    name,
                    process.process.returncode,
                    process.log_path,
                    log_tail(process.log_path),
                )
                return 1
        now = time.monotonic()
        changed = False
        for child in children:
            child.poll(now)
            if child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                child.start(base_env)
                changed = True
        if changed:
            save_state(True)
    return 0
