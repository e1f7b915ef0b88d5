"""Builds the app: services, routers, error handlers, static files; nothing else."""

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from . import __version__
from .api import errors
from .api.routes import analyses, datasets, health, models
from .config import Settings, get_settings
from .db.cache import ResultCache
from .db.engine import init_db, make_engine
from .jobs import JobRunner
from .model_store import ModelStore

log = logging.getLogger("loupe")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = make_engine(settings.sqlalchemy_url)
        cache = ResultCache(init_db(engine))
        interrupted = cache.fail_interrupted()
        if interrupted:
            log.warning("marked %d interrupted analyses as failed", interrupted)
        app.state.settings = settings
        app.state.cache = cache
        app.state.store = ModelStore(settings)
        app.state.jobs = JobRunner(cache, settings.max_jobs, settings.job_timeout_s)
        yield
        app.state.jobs.shutdown()
        engine.dispose()

    app = FastAPI(
        title="Loupe",
        version=__version__,
        description="Attention maps, head scores and loop iterations of transformer language models.",
        lifespan=lifespan,
    )
    errors.install(app)

    @app.middleware("http")
    async def limit_body_size(request: Request, call_next):
        """Refuse bodies over LOUPE_MAX_BODY_BYTES before reading them."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            return errors.error_response(
                f"The request body is larger than {settings.max_body_bytes} bytes.", "too_long", 413
            )
        return await call_next(request)
    for router in (health.router, models.router, analyses.router, datasets.router):
        app.include_router(router, prefix="/api", responses=errors.ERROR_RESPONSES)

    app.mount("/", StaticFiles(directory=settings.frontend_dir, html=True), name="frontend")
    return app
