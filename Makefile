# The README's two commands: `make quickstart` (the main job) and `make test`.
PYTHON := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,.venv/bin/python)

.PHONY: install test test-fast quickstart

install:
	bash tools/install.sh

test: install
	$(PYTHON) -m pytest tests

test-fast: install
	$(PYTHON) -m pytest tests -m "not slow"

quickstart: install
	bash tools/quickstart.sh
