# The two commands: `make run` and `make test`. Everything else is a helper for them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test lint migrate seed messages bench clean help

help:
	@echo "make run   - the app with demo data, a Celery worker and beat on http://$(HOST):$(PORT)"
	@echo "make test  - ruff and the pytest suite (SQLite, or PostgreSQL when DATABASE_URL is set)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Funil needs Python 3.11 or newer: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the requirements change.
$(VENV)/.installed-run: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py seed_demo
	@echo ""
	@echo "  Funil is starting on http://$(HOST):$(PORT)/  (admin: http://$(HOST):$(PORT)/admin/)"
	@echo "  Log in as ana or bruno (sales reps), gerente (sales manager), marketing (marketer)"
	@echo "  or admin (superuser); every demo user's password is funil-demo."
	@echo "  Web, Celery worker and beat run together; Ctrl-C stops all of them."
	@echo ""
	@FUNIL_BIN=$(BIN) FUNIL_HOST=$(HOST) FUNIL_PORT=$(PORT) PYTHONUNBUFFERED=1 \
		$(BIN)/honcho -f config/Procfile.dev -d . start

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

# Update the four pt-BR catalogues in place after changing user-facing strings, then compile
# them (needs gettext). Not a plain makemessages from the root: that would move strings between
# catalogues (see config/messages.py).
messages: $(VENV)/.installed-run
	$(BIN)/python -m config.messages
	$(BIN)/python manage.py compilemessages --locale pt_BR --ignore '.venv/*' --ignore 'tests/*' --ignore 'bench/*'

# Every benchmark at full size (1,000,000 leads where it applies) on PostgreSQL and Redis;
# the figures go to docs/benchmarks.md. BENCH_ARGS=--quick for the small sizes CI runs.
BENCH_ARGS ?=
bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf .data staticfiles .pytest_cache
