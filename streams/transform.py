"""The per-source Python hook: ``transform(raw: dict) -> dict | None``.

The Firehose Lambda contract in Python: return a dict (``Ok``; it is mapped next), ``None``
(``Dropped``: counted, not dead-lettered) or raise (``ProcessingFailed``: dead-lettered with
the exception's class and message).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

Transform = Callable[[dict[str, Any]], dict[str, Any] | None]


def load_transform(dotted: str, source: str) -> Transform:
    """Import ``package.module:function`` (or ``package.module.function``) for ``source``."""
    if ":" in dotted:
        module_name, _, attribute = dotted.partition(":")
    else:
        module_name, _, attribute = dotted.rpartition(".")
    where = f"sources.{source}.transform"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{where}: cannot import module {module_name!r}: {exc}") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"{where}: {module_name!r} has no function {attribute!r}")
    hook: Transform = function
    return hook
