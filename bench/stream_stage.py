"""Stream-stage throughput: both engines beside the plain loop (ceiling) and quixstreams (peer).

    python bench/stream_stage.py --events 200000            # starts its own Tansu broker
    python bench/stream_stage.py --events 1000000 --bootstrap 127.0.0.1:9092

Each contender reads its own copy of the same raw topic (4 partitions unless
``--partitions``; N clickstream JSON events of ~250 B, 10 % duplicates, 1 % invalid JSON) in
a child process and writes canonical events and dead letters. Printed per contender:
events/s (first to last record consumed), CPU seconds of the child process (``wait4``
rusage, start-up included) and the same per event, and its peak RSS. CPU per event is the
figure to compare on a shared machine (wall rates swing with other load); ``--report-every
N`` adds per-chunk rates and CPU per event of the kafka and faust children on stderr, to see
whether a contender slows with volume.

Contenders: ``plain`` (confluent-kafka loop, hand-written normalize, in-memory set: the
ceiling), ``kafka`` and ``faust`` (hosepipe's two engines running the same batch core, Avro
out, RocksDB state), ``quix`` (quixstreams 3.x doing the same normalize + dedupe + DLQ with
its RocksDB state, JSON out: the peer).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

DEFAULT_PARTITIONS = 4
PARTITIONS = DEFAULT_PARTITIONS  # --partitions
ROW = "{:<10} {:>10} {:>7} {:>9} {:>12} {:>8} {:>7} {:>6}"
CONTENDERS = ("plain", "kafka", "faust", "quix")


def make_events(n: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    out: list[tuple[bytes, bytes]] = []
    unique = 0
    for i in range(n):
        if i % 100 == 50:
            out.append((f"bad{i}".encode(), b'{"eventId": "broken'))
            continue
        if unique and rng.random() < 0.10:
            j = rng.randrange(max(unique - 5000, 0), unique)
        else:
            j = unique
            unique += 1
        body = {
            "eventId": f"evt-{j:09d}",
            "ts": now - (n - j),
            "type": rng.choice(["page_view", "click", "scroll"]),
            "user": {"id": f"u{j % 9973}", "plan": "pro"},
            "context": {"appVersion": "1.4.2", "page": f"/products/{j % 500}", "ref": "search"},
            "props": {"x": j % 1920, "y": j % 1080, "visible": True},
        }
        out.append((f"evt-{j:09d}".encode(), orjson.dumps(body)))
    return out


def pipeline_tree(prefix: str, group: str) -> dict[str, Any]:
    return {
        "topics": {
            "raw_prefix": f"{prefix}.raw.",
            "canonical": f"{prefix}.canonical",
            "dlq": f"{prefix}.dlq",
            "partitions": PARTITIONS,
        },
        "sources": {
            "clickstream": {
                "kind": "push",
                "key_path": "$.eventId",
                "mapping": {
                    "event_id": "$.eventId",
                    "occurred_at": {"path": "$.ts", "format": "epoch_ms"},
                    "event_type": "$.type",
                    "subject": "$.user.id",
                    "attributes": {"channel": "web"},
                    "attribute_paths": {"app_version": "$.context.appVersion"},
                },
            }
        },
        "streams": {"consumer_group": group, "batch_size": 5000},
    }


# ---------------------------------------------------------------- children

REPORT_EVERY = 0  # set by --report-every in the child: per-chunk figures on stderr


class ChunkReport:
    """Per-chunk figures of a child (``--report-every N``): events/s and process CPU per
    event for each N records, to show whether a contender slows down as volume grows."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.mark = every
        self.last: tuple[float, float] | None = None

    @staticmethod
    def _cpu() -> float:
        usage = os.times()
        return usage.user + usage.system

    def update(self, received: int) -> None:
        if not self.every or not received:
            return
        if self.last is None:
            self.last = (time.monotonic(), self._cpu())
            return
        while received >= self.mark:
            now, cpu = time.monotonic(), self._cpu()
            wall, used = now - self.last[0], cpu - self.last[1]
            print(
                f"  {self.mark:>9,} received: {self.every / max(wall, 1e-9):>9,.0f} events/s, "
                f"{1e6 * used / self.every:6.1f} µs CPU/event, load {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
                flush=True,
            )
            self.last = (now, cpu)
            self.mark += self.every


def child_kafka(bootstrap: str, prefix: str, events: int, workdir: Path) -> dict[str, Any]:
    from hosepipe.config import PipelineConfig
    from hosepipe.settings import Settings
    from streams.kafka_runner import KafkaRunner

    pipeline = PipelineConfig.model_validate(pipeline_tree(prefix, f"{prefix}-g"))
    settings = Settings(_env_file=None, kafka_bootstrap=bootstrap, data_dir=workdir)  # type: ignore[call-arg]
    runner = KafkaRunner(settings, pipeline)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    first = last = 0.0
    report = ChunkReport(REPORT_EVERY)
    while True:
        totals = runner.counters.totals.get("clickstream")
        received = totals.received if totals else 0
        report.update(received)
        if received and not first:
            first = time.monotonic()
        if received >= events:
            last = time.monotonic()
            break
        time.sleep(0.005)
    runner.stop()
    thread.join(30)
    assert totals is not None
    return {
        "seconds": last - first,
        "out": totals.out,
        "dup": totals.duplicates,
        "dlq": totals.dead_lettered,
    }


def child_plain(bootstrap: str, prefix: str, events: int, workdir: Path) -> dict[str, Any]:
    """The ceiling: consume → orjson → hand-written normalize → set dedupe → produce."""
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{prefix}-plain",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    consumer.subscribe([f"{prefix}.raw.clickstream"])
    seen: set[str] = set()
    received = out = dup = dlq = 0
    first = 0.0
    while received < events:
        messages = consumer.consume(5000, 0.5)
        if not messages:
            continue
        if not first:
            first = time.monotonic()
        for message in messages:
            received += 1
            try:
                raw = orjson.loads(message.value())
                event_id = raw.pop("eventId")
                event = {
                    "event_id": event_id,
                    "source": "clickstream",
                    "event_type": raw.pop("type"),
                    "occurred_at": raw.pop("ts") * 1000,
                    "subject": raw["user"]["id"],
                    "payload": orjson.dumps(raw).decode(),
                }
            except Exception:
                dlq += 1
                producer.produce(f"{prefix}.dlq", message.value())
                continue
            if event_id in seen:
                dup += 1
                continue
            seen.add(event_id)
            out += 1
            producer.produce(f"{prefix}.canonical", orjson.dumps(event), event_id.encode())
        producer.flush()
        consumer.commit(asynchronous=False)
    seconds = time.monotonic() - first
    consumer.close()
    return {"seconds": seconds, "out": out, "dup": dup, "dlq": dlq}


def child_faust(bootstrap: str, prefix: str, events: int, workdir: Path) -> dict[str, Any]:
    """The faust engine in this process; a watcher thread stops the worker when done."""
    import signal

    from hosepipe.config import PipelineConfig
    from hosepipe.settings import Settings
    from streams.faust_app import FaustEngine

    pipeline = PipelineConfig.model_validate(pipeline_tree(prefix, f"{prefix}-g"))
    settings = Settings(_env_file=None, kafka_bootstrap=bootstrap, data_dir=workdir)  # type: ignore[call-arg]
    engine = FaustEngine(settings, pipeline)
    times: dict[str, float] = {}

    def watch() -> None:
        report = ChunkReport(REPORT_EVERY)
        while True:
            totals = engine.counters.totals.get("clickstream")
            received = totals.received if totals else 0
            report.update(received)
            if received and "first" not in times:
                times["first"] = time.monotonic()
            if received >= events:
                times["last"] = time.monotonic()
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True).start()
    with contextlib.suppress(SystemExit):
        engine.run()
    totals = engine.counters.totals["clickstream"]
    return {
        "seconds": times["last"] - times["first"],
        "out": totals.out,
        "dup": totals.duplicates,
        "dlq": totals.dead_lettered,
    }


def child_quix(bootstrap: str, prefix: str, events: int, workdir: Path) -> dict[str, Any]:
    """The peer: quixstreams normalize → dedupe (RocksDB state keyed by event_id) → DLQ."""
    from quixstreams import Application

    app = Application(
        broker_address=bootstrap,
        consumer_group=f"{prefix}-quix",
        auto_offset_reset="earliest",
        state_dir=str(workdir / "state"),
        processing_guarantee="at-least-once",
        loglevel="WARNING",
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        producer_extra_config={"linger.ms": 5},
    )
    raw = app.topic(f"{prefix}.raw.clickstream", value_deserializer="bytes", key_deserializer="str")
    canonical = app.topic(f"{prefix}.canonical", value_serializer="json")
    dlq = app.topic(f"{prefix}.dlq", value_serializer="bytes")
    tally = {"received": 0, "out": 0, "dup": 0, "dlq": 0}
    times: dict[str, float] = {}

    def normalize(value: bytes) -> dict[str, Any]:
        tally["received"] += 1
        if tally["received"] == 1:
            times["first"] = time.monotonic()
        if tally["received"] >= events:
            times["last"] = time.monotonic()
            app.stop()
        try:
            raw_event = orjson.loads(value)
            event_id = raw_event.pop("eventId")
            return {
                "event_id": event_id,
                "source": "clickstream",
                "event_type": raw_event.pop("type"),
                "occurred_at": raw_event.pop("ts") * 1000,
                "subject": raw_event["user"]["id"],
                "payload": orjson.dumps(raw_event).decode(),
            }
        except Exception:
            tally["dlq"] += 1
            return {"bad": value}

    def first_time(value: dict[str, Any], state: Any) -> bool:
        if state.get("seen"):  # state is per message key = event_id
            tally["dup"] += 1
            return False
        state.set("seen", time.time())
        tally["out"] += 1
        return True

    sdf = app.dataframe(raw).apply(normalize)
    bad = sdf[sdf.apply(lambda v: "bad" in v)]
    bad.apply(lambda v: v["bad"]).to_topic(dlq)
    good = sdf[sdf.apply(lambda v: "bad" not in v)]
    good = good.filter(first_time, stateful=True)
    good.to_topic(canonical)
    app.run()
    return {
        "seconds": times["last"] - times["first"],
        "out": tally["out"],
        "dup": tally["dup"],
        "dlq": tally["dlq"],
    }


CHILDREN = {"kafka": child_kafka, "plain": child_plain, "faust": child_faust, "quix": child_quix}


# ---------------------------------------------------------------- parent


def peak_rss_mb() -> float:
    """VmHWM of this process (reset by exec, unlike ru_maxrss which a child inherits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def produce_raw(bootstrap: str, prefix: str, records: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000})
    topic = f"{prefix}.raw.clickstream"
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)


def run_contender(
    name: str,
    bootstrap: str,
    events: int,
    records: list[tuple[bytes, bytes]],
    workdir: Path,
    report_every: int = 0,
) -> dict[str, Any]:
    from hosepipe.config import PipelineConfig
    from hosepipe.settings import Settings
    from hosepipe.topics import ensure_topics

    prefix = f"bench{name}{int(time.time())}"
    settings = Settings(_env_file=None, kafka_bootstrap=bootstrap, data_dir=workdir)  # type: ignore[call-arg]
    ensure_topics(settings, PipelineConfig.model_validate(pipeline_tree(prefix, prefix)))
    produce_raw(bootstrap, prefix, records)
    command = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--bootstrap",
        bootstrap,
        "--prefix",
        prefix,
        "--events",
        str(events),
        "--workdir",
        str(workdir / name),
        "--report-every",
        str(report_every),
        "--partitions",
        str(PARTITIONS),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"{name} child failed with status {status}")
    last = output.decode().strip().splitlines()[-1]
    result = json.loads(last[last.index("{") :])  # faust's spinner may leave escapes before it
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    result["events_per_s"] = events / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", help="use this broker instead of starting Tansu")
    parser.add_argument("--only", nargs="*", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument(
        "--report-every",
        type=int,
        default=0,
        metavar="N",
        help="kafka and faust: print events/s and CPU µs per event for every N records "
        "(shows whether a contender slows down with volume)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=DEFAULT_PARTITIONS,
        help="partitions of the raw, canonical and DLQ topics (the embedded example has 1)",
    )
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global PARTITIONS
    PARTITIONS = args.partitions  # read by pipeline_tree, in this process and in the children
    if args.child:
        global REPORT_EVERY
        REPORT_EVERY = args.report_every
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        result = CHILDREN[args.child](args.bootstrap, args.prefix, args.events, Path(args.workdir))
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="hosepipe-bench-") as tmp:
        workdir = Path(tmp)
        broker = None
        bootstrap = args.bootstrap
        if bootstrap is None:
            from hosepipe.localstack.servers import free_port, start_broker

            broker = start_broker(workdir / "broker", free_port())
            bootstrap = broker.bootstrap
        try:
            records = make_events(args.events)
            print(f"{args.events} events, 10% duplicates, 1% invalid JSON, {PARTITIONS} partitions")
            header = (
                "contender",
                "events/s",
                "CPU s",
                "µs/event",
                "peak RSS MB",
                "out",
                "dup",
                "dlq",
            )
            print(ROW.format(*header))
            for name in args.only:
                r = run_contender(name, bootstrap, args.events, records, workdir, args.report_every)
                row: tuple[Any, ...] = (name, f"{r['events_per_s']:,.0f}", f"{r['cpu_s']:.1f}")
                row += (f"{1e6 * r['cpu_s'] / args.events:.1f}", f"{r['peak_rss_mb']:.0f}")
                row += (r["out"], r["dup"], r["dlq"])
                print(ROW.format(*row), flush=True)
        finally:
            if broker is not None:
                broker.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
