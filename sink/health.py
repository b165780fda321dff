"""Lake write health: healthy → degraded → healthy, one log line per change, with backoff.

While degraded, a reminder (``lake still unavailable``) is logged at most once per
``remind_every`` seconds, so a long outage neither floods the log nor goes silent.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from enum import StrEnum

log = logging.getLogger(__name__)


class LakeState(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"


@dataclass
class Backoff:
    """Exponential backoff with jitter: ``initial * 2**n``, capped at ``maximum`` seconds."""

    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.maximum, self.initial * 2 ** max(0, attempt - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


@dataclass
class LakeHealth:
    """Tracks consecutive failed flushes; logs only when the state changes."""

    backoff: Backoff = field(default_factory=Backoff)
    state: LakeState = LakeState.HEALTHY
    failures: int = 0
    degraded_since: float | None = None
    remind_every: float = 60.0
    _reminded_at: float = 0.0

    def failed(self, error: Exception, now: float, where: str) -> float:
        """Record a failed attempt; returns the seconds to wait before the next one."""
        self.failures += 1
        if self.state is LakeState.HEALTHY:
            self.state = LakeState.DEGRADED
            self.degraded_since = self._reminded_at = now
            log.warning(
                "lake unavailable, holding offsets and retrying",
                extra={"state": "degraded", "where": where, "error": str(error)},
            )
        elif now - self._reminded_at >= self.remind_every:
            self._reminded_at = now
            log.warning(
                "lake still unavailable, retrying",
                extra={
                    "state": "degraded",
                    "where": where,
                    "failed_attempts": self.failures,
                    "outage_seconds": round(
                        now - (now if self.degraded_since is None else self.degraded_since), 1
                    ),
                    "error": str(error),
                },
            )
        return self.backoff.delay(self.failures)

    def succeeded(self, now: float) -> None:
        """Record a successful flush; logs the recovery once."""
        if self.state is LakeState.DEGRADED:
            log.warning(
                "lake recovered, catching up",
                extra={
                    "state": "recovered",
                    "failed_attempts": self.failures,
                    "outage_seconds": round(
                        now - (now if self.degraded_since is None else self.degraded_since), 1
                    ),
                },
            )
        self.state = LakeState.HEALTHY
        self.failures = 0
        self.degraded_since = None
