"""What the bad-input tests share: the pipeline under test and checks of outcomes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from hosepipe.config import PipelineConfig
from tests.badinput.catalogue import Case

SOURCE = "bad"
MAPPING: dict[str, Any] = {
    "event_id": "$.id",
    "occurred_at": "$.ts",
    "event_type": "$.type",
    "subject": "$.user",
}


def pipeline(prefix: str = "badinput", **sections: Any) -> PipelineConfig:
    """One push source ``bad`` (key $.id) on topics under ``prefix``; auth off."""
    return PipelineConfig.model_validate(
        {
            "topics": {
                "raw_prefix": f"{prefix}.raw.",
                "canonical": f"{prefix}.canonical",
                "dlq": f"{prefix}.dlq",
                "partitions": 1,
            },
            "sources": {SOURCE: {"kind": "push", "key_path": "$.id", "mapping": MAPPING}},
            "ingest": {"auth": False},
            "streams": {"consumer_group": f"{prefix}.worker", "batch_size": 200},
            **sections,
        }
    )


def param(case: Case, where: str = "") -> Any:
    """``case`` as a pytest param: its name as id, xfail (strict) when it is a known bug
    (of every test, or only of the tests at ``where`` when the case says ``bug_in``)."""
    buggy = case.bug is not None and case.option("bug_in", where) == where
    marks = [pytest.mark.xfail(reason=case.bug or "", strict=True)] if buggy else []
    return pytest.param(case, id=case.name, marks=marks)


def expected_canonical(raw: dict[str, Any]) -> dict[str, Any]:
    """The canonical fields a good catalogue record must map to, character for character.

    Read ``raw`` with the standard library's ``json.loads`` (exact integers of any size)."""
    rest = {k: v for k, v in raw.items() if k not in {"id", "ts", "type", "user"}}
    return {
        "event_id": raw["id"] if isinstance(raw["id"], str) else str(raw["id"]),
        "event_type": raw["type"],
        "subject": raw["user"],
        "payload": rest,
    }


def canonical_view(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": event["event_id"],
        "event_type": event["event_type"],
        "subject": event["subject"],
        "payload": orjson.loads(event["payload"]),
    }
