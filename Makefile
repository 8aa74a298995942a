# Everything a fresh machine needs: `make run` and `make test` create .venv and install into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test bench bench-farm nginx lint format clean postgres digest-screenshot

# Root runs apt-get directly; anyone else through sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/reelwatch run

test: $(STAMP) postgres
	$(BIN)/python -m pytest -q

# The storage tests also run on a real PostgreSQL: a throw-away cluster that the
# tests start on 127.0.0.1 from Debian's postgresql package, installed here if missing.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing Debian's postgresql package for the tests"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			postgresql >/dev/null; \
	fi

bench: $(STAMP) bench-farm
	$(BIN)/python bench/classify_speed.py
	$(BIN)/python bench/classify_quality.py
	$(BIN)/python bench/stories_quality.py
	$(BIN)/python bench/poll_bench.py

# Whole polls of a farm of 2,000 generated feeds served by nginx, against a feedparser
# loop and the reader library; writes bench/RESULTS.md. FARM_ARGS=--scale adds 10,000 feeds.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,bench]'
	touch $(BENCH_STAMP)

bench-farm: $(BENCH_STAMP) nginx
	$(BIN)/python bench/farm_bench.py $(FARM_ARGS)

# The farm benchmark's feed server: Debian's nginx-light, installed here if missing.
nginx:
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
		echo "installing Debian's nginx-light package for the farm benchmark"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			nginx-light >/dev/null; \
	fi

# The README's picture of a digest: a sample rendered from the labelled set, shot by
# Debian's headless chromium (installed here if missing).
digest-screenshot: $(STAMP)
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
		chromium fonts-dejavu-core >/dev/null; }
	$(BIN)/python docs/digest_sample.py
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=720,1800 \
		--screenshot=docs/digest.png docs/digest-sample.html 2>/dev/null

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
