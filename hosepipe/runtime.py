"""What every command needs at start: settings, the pipeline, logging — or a clear exit."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from hosepipe.config import ConfigError, PipelineConfig, load_pipeline
from hosepipe.logs import configure_logging
from hosepipe.settings import Settings


class StartupError(Exception):
    """Settings or pipeline are invalid; the message is for the person starting the program."""


@dataclass(frozen=True)
class Runtime:
    """The one settings object and the pipeline, passed down to every component."""

    settings: Settings
    pipeline: PipelineConfig


def load_settings(**overrides: object) -> Settings:
    """Read ``HOSEPIPE_*``; a wrong value raises :class:`StartupError` naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for problem in exc.errors():
            key = "HOSEPIPE_" + "_".join(str(p) for p in problem["loc"]).upper()
            message = problem["msg"]
            if problem["type"] == "extra_forbidden":
                message = "unknown setting"
            lines.append(f"{key}: {message}")
        raise StartupError("invalid settings:\n" + "\n".join(lines)) from exc


def load_runtime(
    component: str, config_file: Path | None = None, *, quiet_logs: bool = False
) -> Runtime:
    """Settings + pipeline + logging for ``component``; raises :class:`StartupError`."""
    settings = load_settings()
    if config_file is not None:
        settings = settings.model_copy(update={"config_file": config_file})
    if not quiet_logs:
        configure_logging(component, settings.log_level, settings.log_format)
    try:
        pipeline = load_pipeline(settings.config_file)
    except ConfigError as exc:
        raise StartupError(str(exc)) from exc
    return Runtime(settings=settings, pipeline=pipeline)


def settle_garbage_collector(
    young: int, middle: int | None = None, oldest: int | None = None
) -> None:
    """Keep CPython's cyclic collector off the hot path of a long-running process.

    Everything built at start (modules, pydantic models, boto3, pyarrow; 100k+ objects)
    lives as long as the process. It is frozen, so full collections no longer walk it, and
    young collections wait for ``young`` net new tracked objects (default 700). Hot loops
    here allocate many short-lived dicts and lists freed by reference counting; with the
    default thresholds the collector ran over and over mid-batch (measured: > 50 % of the
    stream worker's cost per event, a fifth of the sink's main thread, the API's latency
    tail, two thirds of the selector's rule projection). Cyclic garbage still counts toward
    the thresholds, so it stays bounded. ``middle``/``oldest`` default to the current ones.
    """
    gc.collect()
    gc.freeze()
    _, current_middle, current_oldest = gc.get_threshold()
    gc.set_threshold(
        young,
        current_middle if middle is None else middle,
        current_oldest if oldest is None else oldest,
    )
