# Loupe: `make run` serves the dashboard on the embedded models; `make test` runs every test.
# Both install what they need (a virtualenv in .venv; Debian's chromium for the browser tests,
# postgresql and redis-server for the tests against real services).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench browser services clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements-torch.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from requirements-torch.txt as the Docker image: exactly pinned, CPU build
	$(PY) -m pip install -q -r requirements-torch.txt
	$(PY) -m pip install -q -e ".[dev]"
	# the kept path's compiled attention (about 20 s; without a C++ compiler the torch rows run)
	$(PY) -m loupe.fused
	touch $(STAMP)

run: install
	$(PY) -m loupe

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

# the servers tests start for themselves (tests/services/): a throwaway PostgreSQL cluster, Redis
services:
	@{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null; fi; }

# every test on SQLite, then the API suite and the queue's (web, two workers, Redis) again with each
# test's app on a PostgreSQL database of its own
test: install browser services
	$(PY) -m pytest -q
	LOUPE_TEST_DATABASE=postgres $(PY) -m pytest -q tests/api tests/scale

bench: install browser
	$(PY) -m bench

clean:
	rm -rf $(VENV) data .pytest_cache
