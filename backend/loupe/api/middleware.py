"""ASGI middleware: request size before reading, and the security headers of every response."""

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..errors import TooLong
from .errors import respond


class DeclaredSizeLimit:
    """Refuse a body whose Content-Length is over the limit before reading any of it. Bodies sent
    without one (chunked) are counted as they stream in by Starlette's RequestBodyLimitMiddleware."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = Headers(scope=scope).get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
                error = TooLong(f"The request body is larger than the server's limit ({self.max_bytes} bytes).")
                await respond(error, headers={"Connection": "close"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def security_headers(settings: Settings) -> dict[str, str]:
    """Scripts only from Loupe itself; styles inline too (Plotly sets them); images and workers
    from blob:/data: (chart downloads, ReDoc's worker); framing per LOUPE_FRAME_ANCESTORS."""
    policy = "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "worker-src 'self' blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            f"frame-ancestors {settings.frame_ancestors}",
        ]
    )
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


class SecurityHeaders:
    def __init__(self, app: ASGIApp, headers: dict[str, str]):
        self.app, self.headers = app, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)
