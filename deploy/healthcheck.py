#!/usr/bin/env python3
"""Container healthcheck for every hosepipe component (installed as ``hosepipe-healthcheck``).

One image runs every component, so the image's HEALTHCHECK cannot know which port to ask.
This script finds the ``hosepipe <command>`` process in the container and asks that
component's ``/healthz``: ingest on ``HOSEPIPE_INGEST_PORT``, api on ``HOSEPIPE_API_PORT``,
the consumers (worker, sink, poll, select) on ``HOSEPIPE_METRICS_PORT``. One-shot commands
(``topics create``, ``db upgrade``, ...) and consumers without a metrics port are healthy
while their process lives. Standard library only: it runs with the base image's Python.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

HTTP_PORTS = {"ingest": ("HOSEPIPE_INGEST_PORT", 8080), "api": ("HOSEPIPE_API_PORT", 8000)}
CONSUMERS = frozenset({"worker", "sink", "poll", "select"})


def component_of(argv: Sequence[str]) -> str | None:
    """The hosepipe command in a process's argv, or None when it is not hosepipe."""
    for index, arg in enumerate(argv):
        name = Path(arg).name
        is_script = name == "hosepipe"
        is_module = arg == "-m" and index + 1 < len(argv) and argv[index + 1] == "hosepipe"
        if is_script or is_module:
            start = index + (2 if is_module else 1)
            rest = [a for a in argv[start:] if not a.startswith("-")]
            return rest[0] if rest else ""
    return None


def health_url(component: str, env: Mapping[str, str]) -> str | None:
    """Where the component answers ``/healthz``; None when it has no endpoint to ask."""
    if component in HTTP_PORTS:
        variable, default = HTTP_PORTS[component]
        port = int(env.get(variable, default))
    elif component in CONSUMERS:
        port = int(env.get("HOSEPIPE_METRICS_PORT", "0"))
    else:
        return None
    return f"http://127.0.0.1:{port}/healthz" if port else None


def hosepipe_processes(proc: Path = Path("/proc")) -> Iterator[str]:
    """Commands of the hosepipe processes running in this container (PID namespace)."""
    for entry in proc.iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # the process ended while we looked
            continue
        component = component_of([a.decode(errors="replace") for a in raw.split(b"\0") if a])
        if component is not None:
            yield component


def check(env: Mapping[str, str], proc: Path = Path("/proc"), timeout: float = 4.0) -> str | None:
    """None when healthy, else the reason."""
    components = list(hosepipe_processes(proc))
    if not components:
        return "no hosepipe process is running"
    for component in components:
        url = health_url(component, env)
        if url is None:
            continue
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                if response.status != 200:
                    return f"{component}: {url} answered {response.status}"
        except urllib.error.HTTPError as exc:
            return f"{component}: {url} answered {exc.code}: {exc.read(300)!r}"
        except OSError as exc:
            return f"{component}: {url} unreachable: {exc}"
    return None


def main() -> int:
    problem = check(os.environ)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
