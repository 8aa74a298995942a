# Everything a fresh machine needs: `make run` and `make test` create .venv and install into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test bench lint format clean postgres digest-screenshot

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

bench: $(STAMP)
	$(BIN)/python bench/classify_speed.py
	$(BIN)/python bench/classify_quality.py
	$(BIN)/python bench/poll_bench.py

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
