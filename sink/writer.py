"""Make a :class:`~sink.batch.FlushPlan` durable: Parquet per open file, written in parallel."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hosepipe.lake import Compression, LakeStore, parquet_bytes
from sink.batch import FlushPlan, OpenFile


@dataclass(frozen=True)
class WrittenFile:
    key: str
    rows: int
    bytes: int


class PlanWriter:
    """Serializes and stores every file of a plan; a failure raises after the others finish."""

    def __init__(
        self,
        store: LakeStore,
        compression: Compression = "zstd",
        row_group_rows: int = 128 * 1024,
        workers: int = 4,
    ) -> None:
        self.store = store
        self.compression: Compression = compression
        self.row_group_rows = row_group_rows
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lake-write")

    def write_file(self, open_file: OpenFile) -> WrittenFile:
        table = open_file.table()
        data = parquet_bytes(table, self.compression, self.row_group_rows)
        self.store.put(open_file.key, data)
        return WrittenFile(open_file.key, table.num_rows, len(data))

    def write(self, plan: FlushPlan, done: dict[str, WrittenFile]) -> list[WrittenFile]:
        """Write the files of ``plan`` not yet in ``done`` (which this fills as files land).

        Returns every written file of the plan; raises the first error once all attempts of
        this round have finished, so no write is still running when the caller goes on.
        After a failure the files not yet started are not started (the lake is likely down:
        each would go through all its retries first); the next round writes them.
        """
        todo = [f for f in plan.files if f.key not in done]
        futures = [self._pool.submit(self.write_file, f) for f in todo]
        error: BaseException | None = None
        for future in futures:
            if future.cancelled():
                continue
            try:
                written = future.result()
            except BaseException as exc:
                if error is None:
                    error = exc
                    for pending in futures:
                        pending.cancel()  # only those not started yet
                continue
            done[written.key] = written
        if error is not None:
            raise error
        return [done[f.key] for f in plan.files]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
