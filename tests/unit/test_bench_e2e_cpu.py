"""bench/e2e.py's CPU accounting: the benchmark's own process counts without the
components it started (they are its children, and have rows of their own)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _e2e() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_e2e", ROOT / "bench" / "e2e.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


BUSY_CHILD = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"


def test_own_process_counts_without_its_children() -> None:
    e2e = _e2e()
    child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD + "time.sleep(30)"])
    try:
        resources = e2e.Resources({"child": child.pid, "bench": os.getpid()})
        deadline = time.monotonic() + 20
        while resources.sample().get("child", 0.0) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu = resources.sample()
        assert cpu["child"] >= 0.5
        own = os.times()
        # The child's busy second is not in the benchmark's own row.
        assert cpu["bench"] <= own.user + own.system + 0.05
        assert cpu["bench"] < own.user + own.system + cpu["child"] - 0.4
    finally:
        child.kill()
        child.wait()


def test_cpu_use_line() -> None:
    e2e = _e2e()
    line = e2e.cpu_use_line("throughput", {"a": 60.0, "b": 34.0}, 50.0, 2, 940_000)
    assert line == (
        "throughput phase: 94.0 CPU s of the 100.0 core-seconds it had (94% of 2 cores); "
        "100.0 CPU s per million valid events"
    )
