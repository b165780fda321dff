"""Server launcher behaviour that needs no real server."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest

from hosepipe.localstack import servers


def test_busy_port_is_named_with_its_setting(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(servers.PortInUseError, match=rf"{port}.*HOSEPIPE_BROKER_PORT"):
            servers.start_broker(tmp_path, port)
        with pytest.raises(servers.PortInUseError, match=rf"{port}.*HOSEPIPE_S3_PORT"):
            servers.start_s3(tmp_path, port, "a", "b", ["lake"])


def test_server_that_exits_early_reports_its_log(tmp_path: Path) -> None:
    marker = "boom-" + uuid.uuid4().hex
    process = servers.launch("broken", ["/bin/sh", "-c", f"echo {marker}; exit 3"], tmp_path / "l")
    with pytest.raises(servers.ServerStartError, match=rf"(?s)broken exited with code 3.*{marker}"):
        servers.wait_ready(process, lambda: False, 10, "start")


def test_server_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    process = servers.launch(
        "sleeper", ["/bin/sh", "-c", "echo waiting; exec sleep 60"], tmp_path / "l"
    )
    with pytest.raises(
        servers.ServerStartError, match=r"(?s)sleeper did not start within 1 s.*waiting"
    ):
        servers.wait_ready(process, lambda: False, 1, "start")
    assert not servers.pid_alive(process.pid)


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    process = servers.launch(
        "stubborn", ["/bin/sh", "-c", "trap '' TERM; sleep 60 & wait"], tmp_path / "l"
    )
    process.stop(timeout=0.5)
    assert not process.alive()
    assert _live_group_members(process.pid) == []  # nothing of its process group is left


def _live_group_members(pgid: int) -> list[int]:
    """Non-zombie processes of group ``pgid`` (zombies wait for init to reap them)."""
    time.sleep(0.2)
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.parametrize(
    ("total_memory", "expected"),
    [
        (None, 256),
        (512 * 1024**2, 128),  # small VM: the floor
        (2 * 1024**3, 256),  # an eighth
        (4 * 1024**3, 512),
        (8 * 1024**3, 1024),
        (24 * 1024**3, 1024),  # the cap: the stack shares the machine
    ],
)
def test_postgres_shared_buffers_scale_with_memory(total_memory: int | None, expected: int) -> None:
    assert servers.postgres_shared_buffers_mb(total_memory) == expected


def test_physical_memory_is_read_from_the_platform() -> None:
    memory = servers.physical_memory()
    assert memory is None or memory > 64 * 1024**2


def test_physical_memory_respects_a_containers_limit(tmp_path: Path) -> None:
    limit = tmp_path / "memory.max"
    limit.write_text("1073741824\n")
    assert servers.physical_memory([limit]) == min(1024**3, servers.physical_memory([]) or 2**62)
    limit.write_text("max\n")  # cgroup v2 without a limit
    assert servers.physical_memory([limit]) == servers.physical_memory([])
    assert servers.physical_memory([tmp_path / "absent", limit]) == servers.physical_memory([])
