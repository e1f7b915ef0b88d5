# Loupe: the same server as `make run`, on the embedded models, offline-capable.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LOUPE_HOST=0.0.0.0 \
    LOUPE_PORT=8000 \
    LOUPE_DATA_DIR=/data \
    HF_HOME=/hf-cache

WORKDIR /app

# a C++ compiler: the kept path's attention (backend/loupe/kept_attention.cpp) is built for the CPU it
# runs on, on first use, into the data volume (TORCH_EXTENSIONS_DIR); without one the torch rows run
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*

# torch first, from requirements-torch.txt as `make install`: exactly pinned, CPU build (a range, or
# the default index, pulls CUDA packages of several GB)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY requirements-torch.txt ./
RUN pip install --index-url "$TORCH_INDEX_URL" -r requirements-torch.txt

COPY pyproject.toml README.md ./
COPY backend ./backend
# the `postgres` and `queue` extras: the scale profile's server and workers store results in Postgres
# and pass analyses through Redis (docs/scale.md)
RUN pip install ".[postgres,queue]"

COPY frontend ./frontend
COPY models ./models
ENV LOUPE_ZOO_DIR=/app/models \
    LOUPE_FRONTEND_DIR=/app/frontend \
    TORCH_EXTENSIONS_DIR=/data/kernels

RUN useradd --create-home loupe && mkdir -p /data /hf-cache && chown loupe /data /hf-cache
USER loupe
VOLUME ["/data", "/hf-cache"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4).status == 200 else 1)"

CMD ["python", "-m", "loupe"]
