"""ResultCache on SQLite and PostgreSQL: blobs byte-identical, concurrent writers of one key, eviction."""

import random
import threading
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from loupe.codec import Slice
from loupe.db.cache import ResultCache
from loupe.db.engine import init_db
from loupe.db.tables import Analysis, Blob
from loupe.hashing import canonical_json

REQUEST = {"text": "The cat sat on the mat.", "params": {"seed": 0}}
EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _slices(seed: int, count: int = 3, size: int = 4096) -> list[Slice]:
    """Incompressible bytes (every value 0..255, NUL included): what a driver must not alter."""
    rng = random.Random(seed)
    return [
        Slice("pattern", 0, layer, 1, "f16z", [8, 8], bytes(rng.getrandbits(8) for _ in range(size)) + b"\x00\xff")
        for layer in range(count)
    ]


def _stored(cache: ResultCache, key: str, seed: int = 0) -> list[Slice]:
    cache.begin(key, "attention", 1, "local/gpt2tiny", REQUEST)
    slices = _slices(seed)
    cache.store(key, {"tokens": ["The", " cat"], "n": seed}, slices)
    return slices


def test_a_result_and_its_blobs_read_back_byte_identical(engines):
    cache = ResultCache(init_db(engines()))
    slices = _stored(cache, "k" * 64)
    row = cache.read("k" * 64)
    assert row.status == "done" and row.result == {"tokens": ["The", " cat"], "n": 0} and row.request == REQUEST
    assert row.read_at.utcoffset().total_seconds() == 0 and row.created_at <= row.read_at
    for piece in slices:
        blob = cache.blob("k" * 64, piece.name, piece.iteration, piece.layer, piece.head)
        assert isinstance(blob.data, bytes) and blob.data == piece.data and blob.shape == piece.shape
    # size_bytes counts what Python wrote, so both backends agree on it to the byte
    expected = len(canonical_json(REQUEST).encode()) + len(canonical_json(row.result).encode()) + sum(len(s.data) for s in slices)
    assert row.size_bytes == expected == cache.stored_bytes()


def test_concurrent_writers_of_one_key_do_not_error(engines):
    """Two engines (two pools, as two processes) begin, then store, the same keys at the same moment."""
    caches = [ResultCache(init_db(engines())) for _ in range(2)]
    keys = [f"{i:064d}" for i in range(20)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def write(cache: ResultCache, seed: int) -> None:
        try:
            for key in keys:
                barrier.wait()
                cache.begin(key, "attention", 1, "local/gpt2tiny", REQUEST)
                barrier.wait()
                cache.store(key, {"n": seed}, _slices(seed, count=2, size=256))
        except BaseException as error:  # noqa: BLE001 - reported below, with the thread's error
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=write, args=(cache, seed)) for seed, cache in enumerate(caches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    with caches[0].sessions() as session:
        rows = session.scalars(select(Analysis).order_by(Analysis.id)).all()
        assert [row.id for row in rows] == keys and {row.status for row in rows} == {"done"}
        for row in rows:  # whichever writer stored last, its blobs alone are there
            blobs = session.scalars(select(Blob).where(Blob.analysis_id == row.id)).all()
            assert [b.data for b in blobs] == [s.data for s in _slices(row.result["n"], count=2, size=256)]


def test_a_retry_of_a_failed_key_is_queued_again(engines):
    cache = ResultCache(init_db(engines()))
    cache.begin("f" * 64, "attention", 1, "local/gpt2tiny", REQUEST)
    cache.fail("f" * 64, {"code": "timeout"})
    cache.begin("f" * 64, "attention", 1, "local/gpt2tiny", REQUEST)
    row = cache.get("f" * 64)
    assert row.status == "queued" and row.error is None
    _stored(cache, "d" * 64)
    cache.begin("d" * 64, "attention", 1, "local/gpt2tiny", REQUEST)  # a done result stays done
    assert cache.get("d" * 64).status == "done"


def test_eviction_keeps_the_database_under_max_bytes(engines):
    cache = ResultCache(init_db(engines()))
    keys = [f"{i:064d}" for i in range(6)]
    for seed, key in enumerate(keys):
        _stored(cache, key, seed)
    read_order = [keys[1], keys[2], keys[0], keys[3], keys[4], keys[5]]  # least recently read first
    with cache.sessions.begin() as session:
        for second, key in enumerate(read_order):
            session.execute(update(Analysis).where(Analysis.id == key).values(read_at=EPOCH + timedelta(seconds=second)))
    cap = 3 * cache.get(keys[0]).size_bytes + 1000  # three results, and the requests evicted rows keep
    evicted = cache.evict_to(cap, keep=(keys[1],))
    assert evicted == [keys[2], keys[0], keys[3]]
    assert cache.stored_bytes() <= cap
    for key in evicted:
        row = cache.get(key)
        assert row.status == "evicted" and row.result is None and row.request == REQUEST
        assert cache.blob(key, "pattern", 0, 0, 1) is None
    for key in (keys[1], keys[4], keys[5]):
        assert cache.get(key).status == "done" and cache.blob(key, "pattern", 0, 0, 1) is not None
