"""GET /api/models: the models Loupe may load."""

from fastapi import APIRouter
from pydantic import BaseModel

from ..deps import SettingsDep, StoreDep

router = APIRouter(tags=["models"])


class ModelInfo(BaseModel):
    id: str
    source: str
    n_layers: int
    n_heads: int
    n_iterations: int
    n_ctx: int
    description: str
    capabilities: list[str]
    warnings: list[str] = []
    default: bool = False


@router.get("/models", response_model=list[ModelInfo])
def list_models(store: StoreDep, settings: SettingsDep) -> list[dict]:
    """Every allow-listed model: the embedded zoo, LOUPE_MODEL_DIRS subfolders (`local/<folder>`)
    and LOUPE_HUB_MODELS found in the local Hugging Face cache. `n_iterations` is 1 for a plain model.
    `capabilities` come from the config until the model is loaded, then from its structure (a
    hybrid stack loses `attention` once Loupe has seen which layers attend)."""
    return [
        {**entry.public(), "capabilities": store.capabilities(entry.id), "default": entry.id == settings.default_model}
        for entry in store.entries().values()
    ]
