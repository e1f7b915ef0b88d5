"""Annotated dependencies: the app's long-lived services, taken from app.state, and who is asking."""

import hmac
from typing import Annotated

from fastapi import Depends, Request

from ..config import Settings
from ..errors import Unauthorized
from ..model_store import ModelStore
from ..runs import RunService


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _store(request: Request) -> ModelStore:
    return request.app.state.store


def _runs(request: Request) -> RunService:
    return request.app.state.runs


def client_id(request: Request) -> str:
    """Who a request comes from, for per-client job limits and fair queueing: the first address
    of LOUPE_CLIENT_HEADER when set (a trusted proxy's header), else the peer address."""
    header = request.app.state.settings.client_header
    if header and (value := request.headers.get(header, "").split(",")[0].strip()):
        return value
    return request.client.host if request.client else "unknown"


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[ModelStore, Depends(_store)]
RunsDep = Annotated[RunService, Depends(_runs)]
ClientDep = Annotated[str, Depends(client_id)]


def require_token(request: Request) -> None:
    """With LOUPE_API_TOKEN set, computing or writing needs `Authorization: Bearer <token>`."""
    token = request.app.state.settings.api_token
    if not token:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("This Loupe requires an API token: send `Authorization: Bearer <token>`.")


TokenDep = Depends(require_token)
