"""Does the embedded stack get slower the longer it runs? SeaweedFS and Tansu CPU over time.

Runs ``hosepipe up --demo`` (the whole embedded stack, s3 broker storage, the demo load of
~200 events/s) in a fresh data directory for ``--minutes``, samples the CPU seconds of the
S3 server and the broker every ``--every`` seconds, and prints them per interval, with the
batch objects per raw partition at the end. Once with the broker trim (the default) and
once with ``HOSEPIPE_EMBEDDED_BROKER_TRIM_EVERY=0``, unless ``--only`` says which.

Tansu 0.6 lists every batch object of a partition on each fetch and enforces no retention
on S3, so without the trim the S3 server's CPU climbs with the run's length
(hosepipe/localstack/broker_trim.py). Command:

    .venv/bin/python bench/broker_growth.py --minutes 8

Uses the stack's default ports (9092, 8333, 5432, 8080, 8000): nothing else may hold them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def wait_for_state(data_dir: Path, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state = data_dir / "stack.json"
    while time.monotonic() < deadline:
        if state.exists():
            loaded: dict[str, Any] = json.loads(state.read_text())
            if loaded.get("ready"):
                return loaded
        time.sleep(0.5)
    raise SystemExit(f"the stack in {data_dir} was not ready after {timeout:.0f} s")


def raw_objects_per_partition(state: dict[str, Any]) -> dict[str, int]:
    import boto3

    env = state["client_env"]
    s3 = boto3.client(
        "s3",
        endpoint_url=env["HOSEPIPE_S3_ENDPOINT_URL"],
        aws_access_key_id=env["HOSEPIPE_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["HOSEPIPE_S3_SECRET_ACCESS_KEY"],
        region_name=env["HOSEPIPE_S3_REGION"],
    )
    counts: Counter[str] = Counter()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="tansu", Prefix="clusters/"):
        for entry in page.get("Contents", []):
            parts = entry["Key"].split("/")
            if "records" in parts:
                topic = parts[parts.index("topics") + 1]
                partition = parts[parts.index("partitions") + 1]
                counts[f"{topic}[{int(partition)}]"] += 1
    return dict(sorted(counts.items()))


def run(label: str, trim: bool, minutes: float, every: float) -> list[tuple[float, float]]:
    data_dir = Path(tempfile.mkdtemp(prefix="hosepipe-bench-growth-"))
    env = {**os.environ, "HOSEPIPE_DATA_DIR": str(data_dir)}
    if not trim:
        env["HOSEPIPE_EMBEDDED_BROKER_TRIM_EVERY"] = "0"
    log = (data_dir / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "hosepipe", "up", "--demo"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    samples: list[tuple[float, float]] = []
    try:
        state = wait_for_state(data_dir)
        servers = {p["name"]: psutil.Process(p["pid"]) for p in state["processes"]}
        s3_server, broker = servers["s3"], servers["broker"]
        began = time.monotonic()
        previous = (cpu_seconds(s3_server), cpu_seconds(broker))
        print(f"\n{label}: data dir {data_dir}", flush=True)
        print("| minute | S3 server, % of a core | broker, % of a core |", flush=True)
        print("|---|---|---|", flush=True)
        while time.monotonic() - began < minutes * 60:
            time.sleep(every)
            now = (cpu_seconds(s3_server), cpu_seconds(broker))
            s3_share = 100 * (now[0] - previous[0]) / every
            broker_share = 100 * (now[1] - previous[1]) / every
            minute = (time.monotonic() - began) / 60
            samples.append((s3_share, broker_share))
            print(f"| {minute:.1f} | {s3_share:.0f} % | {broker_share:.0f} % |", flush=True)
            previous = now
        objects = raw_objects_per_partition(state)
        raw = {k: v for k, v in objects.items() if k.startswith("raw.")}
        print(f"batch objects per raw partition at the end: {raw}", flush=True)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        log.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--every", type=float, default=30.0, help="sampling interval, s")
    parser.add_argument("--only", choices=["trim", "untrimmed"], default=None)
    args = parser.parse_args()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores")
    results = {}
    for label, trim in (("trim", True), ("untrimmed", False)):
        if args.only in (None, label):
            results[label] = run(label, trim, args.minutes, args.every)
    for label, samples in results.items():
        if len(samples) >= 4:
            head = sum(s for s, _ in samples[:2]) / 2
            tail = sum(s for s, _ in samples[-2:]) / 2
            print(
                f"{label}: S3 server {head:.0f} % of a core over the first two samples, "
                f"{tail:.0f} % over the last two",
                flush=True,
            )


if __name__ == "__main__":
    main()
