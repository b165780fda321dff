"""Which failures of a following selector are worth a log line (pure, no I/O).

``hosepipe select --follow`` retries every ``follow_interval``. While S3 or PostgreSQL is
down every run fails the same way; a traceback per interval buries everything else. So a
follower logs one line when runs start failing (with the traceback only for an unexpected
error, which is a bug or bad data rather than an outage), one when the failure changes
kind, a reminder every :data:`REMIND_AFTER` seconds while it lasts, and one when a run works
again. ``/healthz`` reports every failure meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

REMIND_AFTER = 300.0


def failure_kind(exc: BaseException) -> str:
    """``postgresql`` or ``lake`` for an outage of that server, else ``error``."""
    import psycopg
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return "postgresql"
    if isinstance(
        exc,
        sqlalchemy.exc.OperationalError
        | sqlalchemy.exc.InterfaceError
        | psycopg.OperationalError
        | psycopg.InterfaceError,
    ):
        return "postgresql"
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and isinstance(
        exc.orig, psycopg.OperationalError | psycopg.InterfaceError
    ):
        return "postgresql"
    if isinstance(exc, OSError):  # pyarrow's S3 and file errors (ArrowIOError is OSError)
        return "lake"
    return "error"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, at most ``limit`` characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Report:
    """A log line to write: ``message``; ``traceback`` when it should carry one."""

    message: str
    warning: bool = True
    traceback: bool = False


@dataclass
class FailureLog:
    """The state of successive runs: ok, or failing since when, how, how often."""

    remind_after: float = REMIND_AFTER
    since: float | None = None
    kind: str | None = None
    failures: int = 0
    reported_at: float = 0.0

    def failed(self, exc: BaseException, now: float) -> Report | None:
        """A run failed with ``exc`` at ``now``; the line to log, or None to stay quiet."""
        kind = failure_kind(exc)
        what = {"postgresql": "PostgreSQL unreachable", "lake": "lake (S3) unreachable"}.get(
            kind, "selection run failed"
        )
        self.failures += 1
        if self.since is None or kind != self.kind:
            changed = self.since is not None
            self.since = self.since if changed else now
            self.kind, self.reported_at = kind, now
            prefix = "still failing, now: " if changed else ""
            return Report(
                f"{prefix}{what}: {one_line(exc)}; retrying every interval, quiet until it changes",
                traceback=kind == "error",
            )
        if now - self.reported_at >= self.remind_after:
            self.reported_at = now
            return Report(
                f"{what} for {now - self.since:.0f}s ({self.failures} failed runs): {one_line(exc)}"
            )
        return None

    def succeeded(self, now: float) -> Report | None:
        """A run worked at ``now``; the recovery line when runs were failing."""
        if self.since is None:
            return None
        report = Report(
            f"selection runs work again after {now - self.since:.0f}s "
            f"({self.failures} failed runs)",
            warning=False,
        )
        self.since, self.kind, self.failures = None, None, 0
        return report
