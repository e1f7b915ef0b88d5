"""Builds the app: services, routers, error handlers, middleware, static files; nothing else."""

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from . import __version__, fused
from .api import errors
from .api.middleware import DeclaredSizeLimit, SecurityHeaders, security_headers
from .api.routes import analyses, datasets, docs, health, models
from .config import Settings, get_settings
from .db.cache import ResultCache
from .db.engine import init_db, make_engine
from .jobs import JobRunner
from .model_store import ModelStore
from .runs import RunService


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = make_engine(settings.sqlalchemy_url)
        cache = ResultCache(init_db(engine))
        if settings.queue_url:
            from .redis_jobs import RedisJobRunner  # the queue's libraries only where it is used

            jobs = RedisJobRunner(settings.queue_url, settings.max_jobs_per_client, settings.job_timeout_s, lost=cache.fail_active)
        else:
            jobs = JobRunner(settings.max_jobs, settings.max_jobs_per_client, settings.job_timeout_s)
        app.state.settings = settings
        app.state.store = ModelStore(settings)
        app.state.runs = RunService(settings, app.state.store, cache, jobs)
        app.state.runs.recover()
        if not settings.queue_url:  # analyses run here (with a queue, in the workers: redis_jobs.work)
            fused.build_in_background()
        yield
        jobs.shutdown()
        engine.dispose()

    app = FastAPI(
        title="Loupe",
        version=__version__,
        description="Attention maps, head scores and loop iterations of transformer language models.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    # outermost last: headers on everything; a declared size refused unread; a streamed
    # (chunked) body counted as it arrives, its 413 raised where the route reads it
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.max_body_bytes)
    app.add_middleware(DeclaredSizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders, headers=security_headers(settings))
    for router in (health.router, models.router, analyses.router, datasets.router):
        app.include_router(router, prefix="/api", responses=errors.ERROR_RESPONSES)
    docs.mount(app)
    # the frontend answers what no route matches, not as a catch-all mount: a known API path asked
    # with a method it lacks then gets 405 with its Allow header, not the static files' 404/405
    app.router.default = StaticFiles(directory=settings.frontend_dir, html=True)
    return app
