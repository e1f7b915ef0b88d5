"""ResultCache: the only code that reads or writes stored analyses and their blobs.

A result becomes visible only as a whole: its blobs and its `done` status are written in one
transaction, so a crash mid-write leaves the previous state (never a partial result marked done).
Rows are kept within a byte budget by evicting the least recently read results (their request
stays, so a permalink recomputes); failures expire. The same code runs on SQLite and PostgreSQL,
where several processes may write one key at once: writes are upserts or lock the row first.
"""

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ..codec import Slice
from ..hashing import canonical_json
from .tables import Analysis, Blob, now

ACTIVE = ("queued", "running")
UPSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}  # INSERT ... ON CONFLICT, per dialect
READ_RESOLUTION = timedelta(seconds=1)  # a read refreshes read_at at most this often (not a write per GET)


def _json_size(value: object) -> int:
    return 0 if value is None else len(canonical_json(value).encode("utf-8"))


class ResultCache:
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def get(self, key: str) -> Analysis | None:
        with self.sessions() as session:
            return session.get(Analysis, key)

    def read(self, key: str) -> Analysis | None:
        """The row, marking it read now (what eviction orders by)."""
        row = self.get(key)
        if row is not None and row.status == "done" and now() - row.read_at > READ_RESOLUTION:
            with self.sessions.begin() as session:
                session.execute(update(Analysis).where(Analysis.id == key).values(read_at=now()))
        return row

    def begin(self, key: str, analysis: str, version: int, model: str, request: dict) -> None:
        """Record a request as queued (a retry of a failed or evicted one starts over). Another
        process beginning the same key at the same moment is no error: one row, queued."""
        with self.sessions.begin() as session:
            insert = UPSERT[session.get_bind().dialect.name](Analysis).values(
                id=key, analysis=analysis, version=version, model=model, request=request, status="queued",
                size_bytes=_json_size(request),
            )  # fmt: skip
            inserted = session.execute(insert.on_conflict_do_nothing(index_elements=[Analysis.id]).returning(Analysis.id)).first()
            if inserted is None:  # there was a row already
                session.execute(
                    update(Analysis).where(Analysis.id == key, Analysis.status != "done").values(status="queued", error=None)
                )

    def set_status(self, key: str, status: str) -> None:
        with self.sessions.begin() as session:
            session.execute(update(Analysis).where(Analysis.id == key).values(status=status))

    def store(self, key: str, result: dict, slices: Iterable[Slice]) -> None:
        """Write all blobs and mark the analysis done, atomically."""
        with self.sessions.begin() as session:
            row = session.get(Analysis, key, with_for_update=True)  # a second writer of this key waits, then replaces
            if row is None:  # deleted while it ran: the result has no request to belong to
                return
            session.execute(delete(Blob).where(Blob.analysis_id == key))
            blobs = [Blob(analysis_id=key, **piece.__dict__) for piece in slices]
            session.add_all(blobs)
            row.status, row.result, row.error, row.read_at = "done", result, None, now()
            row.size_bytes = _json_size(row.request) + _json_size(result) + sum(len(b.data) for b in blobs)

    def fail(self, key: str, error: dict) -> None:
        """Keep a failure with its error body; GET answers it with status `error`."""
        with self.sessions.begin() as session:
            session.execute(update(Analysis).where(Analysis.id == key).values(status="error", error=error, result=None))

    def delete(self, key: str) -> bool:
        """Remove an analysis and its blobs; False if there was none."""
        with self.sessions.begin() as session:
            session.execute(delete(Blob).where(Blob.analysis_id == key))
            return session.execute(delete(Analysis).where(Analysis.id == key)).rowcount > 0

    def page(
        self, *, model: str | None = None, analysis: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[Analysis], int]:
        """(rows newest first, the number matching): the history, filtered and paged."""
        query = select(Analysis)
        for column, value in ((Analysis.model, model), (Analysis.analysis, analysis), (Analysis.status, status)):
            if value is not None:
                query = query.where(column == value)
        with self.sessions() as session:
            total = int(session.scalar(select(func.count()).select_from(query.subquery())))
            rows = session.scalars(query.order_by(Analysis.created_at.desc(), Analysis.id).limit(limit).offset(offset)).all()
        return list(rows), total

    def blob(self, key: str, name: str, iteration: int, layer: int, head: int) -> Blob | None:
        with self.sessions() as session:
            return session.get(Blob, (key, name, iteration, layer, head))

    def fail_active(self, key: str, error: dict) -> None:
        """Keep a failure for an analysis still queued or running (a finished one is left as it is)."""
        with self.sessions.begin() as session:
            session.execute(
                update(Analysis).where(Analysis.id == key, Analysis.status.in_(ACTIVE)).values(status="error", error=error, result=None)
            )

    def fail_interrupted(self, error: dict, keep: set[str] = frozenset()) -> int:
        """At start-up: jobs left queued or running by a dead process become failed (re-runnable),
        except `keep`: those a job queue still holds."""
        with self.sessions.begin() as session:
            return session.execute(
                update(Analysis).where(Analysis.status.in_(ACTIVE), Analysis.id.not_in(keep)).values(status="error", error=error)
            ).rowcount

    def expire_failures(self, older_than: datetime) -> int:
        """Drop failed analyses last touched before `older_than`."""
        with self.sessions.begin() as session:
            return session.execute(
                delete(Analysis).where(Analysis.status == "error", Analysis.updated_at < older_than)
            ).rowcount

    def stored_bytes(self) -> int:
        """What every analysis holds (request, result, blobs), as counted in `size_bytes`."""
        with self.sessions() as session:
            return int(session.scalar(select(func.coalesce(func.sum(Analysis.size_bytes), 0))))

    def evict_to(self, max_bytes: int, keep: tuple[str, ...] = ()) -> list[str]:
        """Evict the least recently read results until everything stored fits in `max_bytes`:
        first their result and blobs (the row keeps its request, status `evicted`), then, if that
        is not enough, whole evicted or failed rows. Running and queued rows, and those in `keep`
        (the result just stored), are never touched. Returns the evicted ids."""
        evicted: list[str] = []
        with self.sessions.begin() as session:
            total = int(session.scalar(select(func.coalesce(func.sum(Analysis.size_bytes), 0))))
            if total <= max_bytes:
                return evicted
            for stage in ("done", "tombstones"):
                statuses = ("done",) if stage == "done" else ("evicted", "error")
                rows = session.scalars(
                    select(Analysis)
                    .where(Analysis.status.in_(statuses), Analysis.id.not_in(keep))
                    .order_by(Analysis.read_at, Analysis.id)
                    .with_for_update(skip_locked=True)  # PostgreSQL: rows another process is storing or evicting are passed over
                ).all()
                for row in rows:
                    if total <= max_bytes:
                        break
                    session.execute(delete(Blob).where(Blob.analysis_id == row.id))
                    if stage == "done":
                        kept = _json_size(row.request)
                        row.status, row.result, row.error = "evicted", None, None
                    else:
                        kept = 0
                        session.delete(row)
                    total -= row.size_bytes - kept
                    row.size_bytes = kept
                    evicted.append(row.id)
        if evicted and self.sessions.kw["bind"].dialect.name == "sqlite":
            with self.sessions.kw["bind"].connect() as connection:  # give the freed pages back to the file system
                connection.execute(text("PRAGMA incremental_vacuum"))
                connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        return evicted
