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
    attention_layers: list[int] | None = None  # known once loaded: a hybrid stack's attention layers
    warnings: list[str] = []
    default: bool = False


@router.get("/models", response_model=list[ModelInfo])
def list_models(store: StoreDep, settings: SettingsDep) -> list[dict]:
    """Every allow-listed model: the embedded zoo, LOUPE_MODEL_DIRS subfolders (`local/<folder>`)
    and LOUPE_HUB_MODELS found in the local Hugging Face cache. `n_iterations` is 1 for a plain model.
    `capabilities` come from the config until the model is loaded, then from its structure (a
    model that turns out to have no attention component loses `attention` once loaded), and so do
    `attention_layers` (null before: every layer, or a hybrid stack's attention layers)."""
    return [
        {
            **entry.public(),
            "capabilities": store.capabilities(entry.id),
            "attention_layers": store.attention_layers(entry.id),
            "default": entry.id == settings.default_model,
        }
        for entry in store.entries().values()
    ]
