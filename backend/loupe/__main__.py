"""`python -m loupe`: serve Loupe with uvicorn on LOUPE_HOST:LOUPE_PORT."""

import json
import logging
import sys

import uvicorn

from .config import get_settings
from .db.engine import DatabaseUnavailable, SchemaMismatch, init_db, make_engine
from .placement import refusal_at_start


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("loupe")
    if (refused := refusal_at_start(settings)) is not None:
        print(json.dumps(refused), file=sys.stderr)
        sys.exit(2)
    if settings.host in ("127.0.0.1", "localhost", "::1"):
        log.info("Loupe listens on %s only; set LOUPE_HOST=0.0.0.0 to serve other machines.", settings.host)
    log.info("Loupe at http://%s:%d  (data dir %s)", settings.host, settings.port, settings.data_dir.resolve())
    # the database is opened (created, migrated) before serving: one clear line if it cannot be, not
    # a traceback from inside the server's start-up
    try:
        engine = make_engine(settings.sqlalchemy_url)
        try:
            init_db(engine)
        finally:
            engine.dispose()
    except (DatabaseUnavailable, SchemaMismatch) as error:
        log.error("Loupe cannot start: %s", error)
        sys.exit(2)
    if settings.queue_url:  # the same for the queue analyses go to
        from .redis_jobs import QueueUnavailable, connect

        try:
            connect(settings.queue_url).close()
        except QueueUnavailable as error:
            log.error("Loupe cannot start: %s", error)
            sys.exit(2)
    uvicorn.run("loupe.main:create_app", factory=True, host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
