"""The models Loupe may load: the list, a model's card, and a text's token count on a model."""

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from starlette.convertors import PathConvertor, register_url_convertor

from ...errors import NotFound
from ..deps import RunsDep, SettingsDep, StoreDep, TokenDep

router = APIRouter(tags=["models"])
MAX_CARD_BYTES = 256 * 1024


class _ModelId(PathConvertor):
    """A model id in a path, slashes included, and any character: Starlette's `path` stops at a line
    break, so an id holding one fell through to the static files (a POST answered 405, not the
    model store's 404 unknown_model)."""

    regex = "(?s:.*)"


register_url_convertor("model_id", _ModelId())


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
    prompt_hint: str | None = Field(None, description="An example of the input the model expects (its loupe.json).")
    has_card: bool = Field(False, description="Whether GET /api/models/{id}/card has its model card.")
    checkpoints: list[int] | None = Field(
        None, description="Training steps it can also be loaded at, as model id `<id>@<step>` (null: none)."
    )
    step: int | None = Field(None, description="The training step of a checkpoint (`<id>@<step>`); null: final weights.")


class TokenizeRequest(BaseModel):
    text: str
    truncate: bool = Field(False, description="Also return the text cut to its first `limit` tokens.")


class Truncated(BaseModel):
    text: str = Field(description="The longest prefix of the text that tokenizes as its first tokens, at most `limit`.")
    n_tokens: int


class TokenCount(BaseModel):
    n_tokens: int = Field(description="Tokens of the text as analyses see it, BOS (or [CLS] and [SEP]) included.")
    limit: int = Field(description="The most an analysis accepts: LOUPE_MAX_TOKENS or the model's context, the smaller.")
    truncated: Truncated | None = Field(None, description="With `truncate` and a text past the limit.")


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


@router.get("/models/{model_id:model_id}/card", response_class=Response,
            responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}}}})
def model_card(model_id: str, store: StoreDep) -> Response:
    """The model's card: the README.md in its folder, as markdown text (404 `no_card` where it has none)."""
    path = store.entry(model_id).card_path
    if path is None:
        raise NotFound(f"{model_id} has no model card (README.md in its folder).", code="no_card")
    with path.open("rb") as card:
        text = card.read(MAX_CARD_BYTES).decode("utf-8", errors="replace")
    return Response(text, media_type="text/markdown; charset=utf-8")


@router.post("/models/{model_id:model_id}/tokenize", response_model=TokenCount, dependencies=[TokenDep])
def tokenize(model_id: str, body: TokenizeRequest, runs: RunsDep) -> dict:
    """How many tokens the text is on this model, and its limit; with `truncate`, the text cut to
    its first `limit` tokens, so an analysis of it runs on exactly those. Loads the model (on a
    worker, when analyses go to a queue)."""
    return runs.count_tokens(model_id, body.text, body.truncate)
