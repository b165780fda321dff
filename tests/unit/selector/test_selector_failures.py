"""A following selector logs one line per change of state, not a traceback per interval."""

from __future__ import annotations

import psycopg
import sqlalchemy.exc

from selector.failures import FailureLog, failure_kind, one_line


def db_down() -> Exception:
    orig = psycopg.OperationalError("connection failed: Connection refused\n\tIs the server up?")
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, orig)


def s3_down() -> Exception:
    return OSError("When listing objects under key 'lake': AWS Error NETWORK_CONNECTION\nmore")


def test_kinds_of_failure() -> None:
    assert failure_kind(db_down()) == "postgresql"
    assert failure_kind(psycopg.OperationalError("x")) == "postgresql"
    assert failure_kind(s3_down()) == "lake"
    assert failure_kind(FileNotFoundError("gone")) == "lake"
    assert failure_kind(ValueError("bug")) == "error"


def test_one_line_is_the_first_line_and_bounded() -> None:
    assert one_line(s3_down()) == (
        "OSError: When listing objects under key 'lake': AWS Error NETWORK_CONNECTION"
    )
    assert "\n" not in one_line(db_down())
    assert len(one_line(ValueError("x" * 1000))) == 300
    assert one_line(ValueError()) == "ValueError"


def test_an_outage_is_one_line_then_quiet_then_a_reminder_then_recovery() -> None:
    failures = FailureLog(remind_after=300)
    first = failures.failed(s3_down(), now=0)
    assert first is not None and first.warning and not first.traceback
    assert first.message.startswith("lake (S3) unreachable: OSError: When listing")
    assert all(failures.failed(s3_down(), now=t) is None for t in range(1, 300))
    reminder = failures.failed(s3_down(), now=300)
    assert reminder is not None and "for 300s (301 failed runs)" in reminder.message
    assert failures.failed(s3_down(), now=301) is None
    back = failures.succeeded(now=310)
    assert back is not None and not back.warning
    assert back.message == "selection runs work again after 310s (302 failed runs)"
    assert failures.succeeded(now=311) is None


def test_a_change_of_failure_is_logged_and_an_unexpected_error_has_its_traceback() -> None:
    failures = FailureLog()
    assert failures.failed(db_down(), now=0) is not None
    assert failures.failed(db_down(), now=1) is None
    changed = failures.failed(s3_down(), now=2)
    assert changed is not None and changed.message.startswith("still failing, now: lake")
    bug = failures.failed(ValueError("bad"), now=3)
    assert bug is not None and bug.traceback
    assert failures.failed(ValueError("bad"), now=4) is None
    back = failures.succeeded(now=5)
    assert back is not None and "after 5s (5 failed runs)" in back.message
