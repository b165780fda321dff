"""The pipeline file: valid examples load, every kind of mistake is named by key and reason."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hosepipe.config import (
    ConfigError,
    Constant,
    FieldPath,
    HashOf,
    PayloadSpec,
    expand_env,
    load_pipeline,
    parse_duration,
    parse_pipeline,
)

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
sources:
  clicks:
    kind: push
    mapping:
      event_id: $.id
      occurred_at: $.ts
      event_type: click
"""


def test_example_pipeline_is_valid() -> None:
    pipeline = load_pipeline(REPO / "hosepipe.yaml")
    assert set(pipeline.sources) == {"clickstream", "orders", "inventory"}
    assert pipeline.sources["inventory"].kind == "pull"
    assert pipeline.raw_topic("orders") == "raw.orders"
    assert pipeline.selection.rules[0].table == "orders"


def test_minimal_pipeline_gets_defaults_and_shorthands() -> None:
    pipeline = parse_pipeline(MINIMAL)
    mapping = pipeline.sources["clicks"].mapping
    assert mapping.event_id == FieldPath(path="$.id")
    assert mapping.event_type == Constant(const="click")
    assert mapping.payload == PayloadSpec(rest=True)
    assert pipeline.streams.dedupe_window == timedelta(hours=24)
    assert pipeline.sink.max_open_partitions == 500
    assert pipeline.topics.canonical == "events.canonical"
    assert pipeline.topics.cursors == "hosepipe.cursors"


def test_hash_id_spec() -> None:
    text = MINIMAL.replace("event_id: $.id", "event_id: {hash: [$.a, $.b.c]}")
    assert parse_pipeline(text).sources["clicks"].mapping.event_id == HashOf(hash=["$.a", "$.b.c"])


TYPO = ("occurred_at: $.ts", "occured_at: $.ts")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("occurred_at: $.ts", "occured_at: $.ts"),
            "sources.clicks.mapping.occured_at: unknown key",
        ),
        (("occurred_at: $.ts", "occured_at: $.ts"), "sources.clicks.mapping.occurred_at: required"),
        (("kind: push", "kind: pusher"), "sources.clicks.kind: Input should be 'push' or 'pull'"),
        (("kind: push", "kind: pull"), "kind 'pull' needs a 'pull' section"),
        (("event_id: $.id", "event_id: $..id"), "is not a supported path"),
        (("clicks:", "Clicks:"), "source name 'Clicks' must be lower-case"),
    ],
)
def test_mistakes_name_the_key_and_reason(change: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pipeline(MINIMAL.replace(*change), "p.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("p.yaml: ")


def test_unknown_top_level_section() -> None:
    with pytest.raises(ConfigError, match=r"sinks: unknown key"):
        parse_pipeline(MINIMAL + "sinks: {}\n")


def test_sink_age_outside_firehose_range() -> None:
    with pytest.raises(ConfigError, match=r"sink.max_age: .*between 0 and 900"):
        parse_pipeline(MINIMAL + "sink: {max_age: 901s}\n")


def test_selection_rule_key_must_be_a_declared_column() -> None:
    text = MINIMAL + textwrap.dedent(
        """
        selection:
          rules:
            - name: big
              table: big_clicks
              columns: {click_id: {path: event_id}}
              key: [id]
        """
    )
    with pytest.raises(ConfigError, match=r"key column\(s\) \['id'\] are not declared"):
        parse_pipeline(text)


def test_selection_rule_unknown_source() -> None:
    text = MINIMAL + "selection:\n  rules:\n    - {name: r, table: t, sources: [nope]}\n"
    with pytest.raises(ConfigError, match=r"unknown source\(s\) \['nope'\]"):
        parse_pipeline(text)


def test_api_jwt_needs_secret() -> None:
    with pytest.raises(ConfigError, match=r"HS256 needs 'jwt.secret'"):
        parse_pipeline(MINIMAL + "api: {auth: jwt, jwt: {algorithms: [HS256]}}\n")


def test_unknown_timezone() -> None:
    text = MINIMAL.replace("occurred_at: $.ts", "occurred_at: {path: $.ts, timezone: Mars/Base}")
    with pytest.raises(ConfigError, match=r"unknown time zone 'Mars/Base'"):
        parse_pipeline(text)


def test_not_yaml_and_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_pipeline("sources: [unclosed")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_pipeline("- a list")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read the pipeline file"):
        load_pipeline(tmp_path / "nope.yaml")


def test_env_references_expand() -> None:
    tree = {"a": "${KEY}", "b": ["x-${MISSING:-dflt}"], "c": 3}
    assert expand_env(tree, {"KEY": "secret"}) == {"a": "secret", "b": ["x-dflt"], "c": 3}
    with pytest.raises(ConfigError, match="KEY is referenced but not set"):
        expand_env({"a": "${KEY}"}, {})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@given(st.integers(min_value=0, max_value=10**7), st.sampled_from(["s", "m", "h", "d"]))
def test_duration_round_trip(number: int, unit: str) -> None:
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{number}{unit}") == timedelta(seconds=number * factor)


@pytest.mark.parametrize("bad", ["soon", "-5s", "5 years", True, None])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(bad)
