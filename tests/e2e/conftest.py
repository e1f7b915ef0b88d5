"""Browser-test fixtures: a real Loupe server on the tiny GPT-2 and a headless Debian Chromium."""

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from ..server import running_server
from ..tiny_models import build_tiny_checkpointed, build_tiny_gpt2

CHROMIUM = "/usr/bin/chromium"
SHIPPED = Path(__file__).resolve().parents[2] / "models"
# Shipped models with different capabilities: induction-2l a generating LM, looped-add a natively
# looped adder that is no language model (loupe.json generating_lm: false), looped-lag the one the
# probes card names as its own (its verdict lags its probe).
ZOO = ("induction-2l", "looped-add", "looped-lag")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def long_model_dir(tmp_path_factory):
    """A LOUPE_MODEL_DIRS folder holding `gpt2long`, the tiny GPT-2 with a 512-token context, and
    `gpt2k`, with a 1,024-token one (the server's default max_tokens), and `gpt2ckpt`, a tiny GPT-2
    with three training checkpoints (steps 0, 100, 1000) and a trajectory.json."""
    root = tmp_path_factory.mktemp("long_dirs")
    build_tiny_checkpointed(root / "gpt2ckpt")
    build_tiny_gpt2(root / "gpt2long", n_ctx=512)
    build_tiny_gpt2(root / "gpt2k", n_ctx=1024)
    return root


@pytest.fixture(scope="session")
def hybrid_model_dir(tmp_path_factory):
    """A LOUPE_MODEL_DIRS folder holding `jamba` (a tiny hybrid stack, a Mamba layer then an attention
    layer) and `bert_mlm` (a tiny BERT encoder with its MLM head)."""
    from ..architectures import build_architecture
    from ..encoders import build_encoder

    root = tmp_path_factory.mktemp("hybrid_dirs")
    build_architecture("jamba", root)
    build_encoder("bert_mlm", root)  # and a BERT encoder: bidirectional, whole matrices
    return root


@pytest.fixture(scope="session")
def native_loop_dir(tmp_path_factory):
    """A LOUPE_MODEL_DIRS folder holding `ouro` (3 steps, an exit gate) and `huginn` (a seeded initial
    latent, 4 steps), tiny and saved as their hubs lay them out (auto_map included)."""
    from loupe.architectures import ouro

    from ..native.test_huginn import build as build_huginn
    from ..tiny_models import _tokenizer

    root = tmp_path_factory.mktemp("native_loop_dirs")
    ouro.save_published(ouro.tiny(0, n_iterations=3), root / "ouro", _tokenizer())
    build_huginn(root / "huginn")
    return root


@pytest.fixture(scope="session")
def loupe_url(model_dir, looped_model_dir, long_model_dir, hybrid_model_dir, native_loop_dir, tmp_path_factory):
    """Base URL of `python -m loupe` on a free port, serving `local/gpt2tiny` (the default),
    `local/loopedtiny` (3 loop iterations), `local/gpt2long`, `local/gpt2k`, `local/jamba` (a hybrid stack), `local/ouro` and
    `local/huginn` (looped in Loupe's own classes), and the shipped `induction-2l` and
    `looped-add` (for cards that follow capabilities), with an empty cache."""
    root = tmp_path_factory.mktemp("e2e_server")
    (root / "zoo").mkdir()
    for name in ZOO:
        (root / "zoo" / name).symlink_to(SHIPPED / name, target_is_directory=True)
    env = {
        "LOUPE_DATA_DIR": str(root / "data"),
        "LOUPE_MODEL_DIRS": f"{model_dir},{looped_model_dir},{long_model_dir},{hybrid_model_dir},{native_loop_dir}",
        "LOUPE_ZOO_DIR": str(root / "zoo"),  # two shipped models; the default is set below, not the zoo's
        "LOUPE_DEFAULT_MODEL": "local/gpt2tiny",
        "LOUPE_HUB_MODELS": "",
        "LOUPE_API_TOKEN": "",
    }
    with running_server(env, root / "server.log") as server:
        yield server.url


@pytest.fixture(scope="session")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make browser` (apt-get install chromium) installs it.")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def page_maker(browser, url):
    """make() -> a page on the Loupe server at `url` in a fresh context (its own storage, clipboard
    access, 1440x1000). Every page records its requests in `page.requests`; on exit an uncaught page
    error fails the test, and so does a request to anywhere but that server (the page must work
    offline: Plotly is vendored, nothing comes from a CDN) and anything the server's
    Content-Security-Policy refused."""
    contexts, errors, refused, pages = [], [], [], []

    def make():
        context = browser.new_context(viewport={"width": 1440, "height": 1000}, base_url=url)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.requests = []
        page.on("request", lambda request: page.requests.append((request.method, request.url)))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: "Content Security Policy" in message.text and refused.append(message.text))
        pages.append(page)
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
    assert not refused, f"the Content-Security-Policy refused: {refused}"
    elsewhere = [url_ for page in pages for _, url_ in page.requests if not url_.startswith((url + "/", "data:", "blob:"))]
    assert not elsewhere, f"the page fetched from outside the Loupe server: {elsewhere}"


@pytest.fixture
def new_page(browser, loupe_url):
    """new_page() -> a page on the shared e2e server (page_maker)."""
    with page_maker(browser, loupe_url) as make:
        yield make
