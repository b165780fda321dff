"""A per-schema cache of parsed and validated operations.

Clients send the same few query texts again and again (with different variables); parsing and
validating one (with the depth and cost rules) costs more than executing a 50-row page. Each
distinct text is parsed and validated once; later requests reuse the document. Only documents
that passed validation are kept, in a bounded LRU, so unique junk cannot grow memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from threading import Lock

from graphql import DocumentNode
from strawberry.extensions import SchemaExtension

DEFAULT_SIZE = 512


class ValidDocuments:
    """Bounded LRU: (query text, validation rules) → parsed document that validated cleanly."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, tuple[type, ...]], DocumentNode] = OrderedDict()
        self._lock = Lock()
        # The rule set every cached document validated under; None until the first put, and
        # ``validated`` answers nothing once two different rule sets were seen.
        self._rules: tuple[type, ...] | None = None
        self._mixed_rules = False

    def get(self, key: tuple[str, tuple[type, ...]]) -> DocumentNode | None:
        with self._lock:
            document = self._items.get(key)
            if document is not None:
                self._items.move_to_end(key)
            return document

    def validated(self, query: str) -> DocumentNode | None:
        """The document of ``query`` if it validated under this schema's one rule set.

        A schema's extensions add the same rules to every operation, so one rule set is the
        normal case; should two ever appear, nothing is answered (callers take the slow path).
        """
        rules = self._rules
        if rules is None or self._mixed_rules:
            return None
        return self.get((query, rules))

    def put(self, key: tuple[str, tuple[type, ...]], document: DocumentNode) -> None:
        with self._lock:
            if self._rules is None:
                self._rules = key[1]
            elif self._rules != key[1]:
                self._mixed_rules = True
            self._items[key] = document
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class DocumentCache(SchemaExtension):
    """Skips parse and validation for a query text that already validated under the same rules.

    Must come after the extensions that add validation rules (they add them on operation
    start, before parsing), so the rules are part of the key.
    """

    def __init__(self, documents: ValidDocuments) -> None:
        super().__init__()
        self.documents = documents
        self._hit = False

    def _key(self) -> tuple[str, tuple[type, ...]] | None:
        query = self.execution_context.query
        if not query:
            return None
        return query, tuple(self.execution_context.validation_rules)

    def on_parse(self) -> Iterator[None]:
        key = self._key()
        document = self.documents.get(key) if key is not None else None
        if document is not None:
            self.execution_context.graphql_document = document
            self._hit = True
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if self._hit:
            context.pre_execution_errors = []  # validated before: strawberry skips validation
        yield
        key = self._key()
        if (
            not self._hit
            and key is not None
            and context.pre_execution_errors == []
            and context.graphql_document is not None
        ):
            self.documents.put(key, context.graphql_document)
