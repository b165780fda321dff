"""Why a record is dead-lettered: one exception class per reason, each tagged with its stage.

The class name goes into the DLQ header ``hosepipe.error.class`` and the stage into
``hosepipe.error.stage``, so an operator can filter the DLQ by reason without parsing text.
"""

from __future__ import annotations


class RecordError(Exception):
    """A record cannot become a canonical event; ``stage`` says where it failed."""

    stage = "map"


class RecordTooLarge(RecordError):
    """The raw value is larger than the source's ``max_record_bytes``."""

    stage = "decode"


class EmptyRecord(RecordError):
    """The raw value is empty or a Kafka tombstone (null value)."""

    stage = "decode"


class InvalidUtf8(RecordError):
    """A JSON source sent bytes that are not UTF-8."""

    stage = "decode"


class InvalidJson(RecordError):
    """A JSON source sent text that is not JSON."""

    stage = "decode"


class NotAnObject(RecordError):
    """The record decoded to something other than an object (a list, a number, ...)."""

    stage = "decode"


class InvalidAvro(RecordError):
    """An Avro source sent bytes its schema cannot read."""

    stage = "decode"


class TransformFailed(RecordError):
    """The source's transform hook raised or returned something other than a dict or None."""

    stage = "transform"


class MissingField(RecordError):
    """A required field is absent (no value at the path and no default)."""

    stage = "map"


class InvalidField(RecordError):
    """A field has a value of the wrong kind (an object where an id was expected, ...)."""

    stage = "map"


class InvalidTimestamp(RecordError):
    """``occurred_at`` cannot be parsed in the configured format."""

    stage = "map"


class ImplausibleTimestamp(RecordError):
    """``occurred_at`` is outside the plausibility range of the ``streams`` config."""

    stage = "validate"


class EventTooLarge(RecordError):
    """The canonical event is larger than the worker's per-message limit (from the source's
    ``max_record_bytes`` and the output topics' ``max.message.bytes``)."""

    stage = "encode"
