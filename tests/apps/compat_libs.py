"""Apps built on libraries that hook into asyncio, contextvars or the ASGI flow.

Each app is a factory (run with --factory) so that a library missing from the venv only
fails the test that needs it. Files the apps write are named by environment variables.
"""

import json
import os


def sqlalchemy_app():
    """FastAPI reading rows with SQLAlchemy's asyncio session over aiosqlite."""
    import contextlib

    from fastapi import FastAPI, HTTPException
    from sqlalchemy import String, select
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = "items"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))

    engine = create_async_engine(f"sqlite+aiosqlite:///{os.environ['COMPAT_DB']}")
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with sessions.begin() as session:
            session.add_all(Item(id=i, name=f"item-{i}") for i in range(1, 101))
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item_id}")
    async def read_item(item_id: int):
        async with sessions() as session:
            item = await session.get(Item, item_id)
            if item is None:
                raise HTTPException(404)
            count = len((await session.scalars(select(Item.id))).all())
        return {"id": item.id, "name": item.name, "of": count}

    return app


def otel_app():
    """A Starlette app wrapped in OpenTelemetry's ASGI middleware; every finished span
    is written to COMPAT_SPANS as one JSON line."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    class FileExporter(SpanExporter):
        def export(self, spans):
            with open(os.environ["COMPAT_SPANS"], "a") as f:
                for span in spans:
                    record = {
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": span.context.trace_id,
                        "parent": span.parent.span_id if span.parent else None,
                        "attributes": dict(span.attributes),
                    }
                    f.write(json.dumps(record) + "\n")
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
    trace.set_tracer_provider(provider)

    async def hello(request):
        return PlainTextResponse("hello " + request.path_params["name"])

    async def missing(request):
        return PlainTextResponse("no", status_code=404)

    inner = Starlette(routes=[Route("/hello/{name}", hello), Route("/missing", missing)])
    return OpenTelemetryMiddleware(inner, tracer_provider=provider)


def sentry_app():
    """FastAPI with the Sentry SDK; a transport writes each event to COMPAT_EVENTS as one
    JSON line instead of sending it."""
    import sentry_sdk
    from fastapi import FastAPI
    from sentry_sdk.transport import Transport

    class FileTransport(Transport):
        def capture_envelope(self, envelope):
            event = envelope.get_event()
            if event is not None:
                with open(os.environ["COMPAT_EVENTS"], "a") as f:
                    f.write(json.dumps(event, default=str) + "\n")

    sentry_sdk.init(
        dsn="https://public@sentry.invalid/1",  # never contacted: the transport replaces it
        transport=FileTransport,
        default_integrations=True,
        traces_sample_rate=0,
    )
    app = FastAPI()

    @app.get("/charge/{amount}")
    async def charge(amount: int):
        if amount > 100:
            raise RuntimeError(f"amount {amount} over the limit")
        return {"charged": amount}

    return app


def structlog_app():
    """FastAPI logging with structlog, a request id bound in contextvars by middleware
    and a user bound by one endpoint only; lines go to COMPAT_LOG as JSON."""
    import asyncio

    import structlog
    from fastapi import FastAPI, Request

    log_file = open(os.environ["COMPAT_LOG"], "a", buffering=1)  # noqa: SIM115
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=log_file),
    )
    log = structlog.get_logger()
    app = FastAPI()

    @app.middleware("http")
    async def bind_request_id(request: Request, call_next):
        # No clear_contextvars(): each request must start from a fresh context anyway.
        structlog.contextvars.bind_contextvars(request_id=request.headers["x-request-id"])
        return await call_next(request)

    @app.get("/login/{user}")
    async def login(user: str):
        structlog.contextvars.bind_contextvars(user=user)
        await asyncio.sleep(0.01)
        log.info("logged in")
        return structlog.contextvars.get_contextvars()

    @app.get("/anonymous")
    async def anonymous():
        log.info("anonymous visit")
        await asyncio.sleep(0.01)
        return structlog.contextvars.get_contextvars()

    return app
