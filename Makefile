# `make run`: set up and run the daemon on the bundled vault (no keys needed).
# `make test`: set up and run lint, types and the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench bench-smoke clean ocr

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet -c requirements.txt -e ".[all]"
	touch $(STAMP)

# OCR (text in scans and photos) needs the Tesseract program: installed here where apt-get can
# (root or password-less sudo); elsewhere images are still embedded and notes say how to enable OCR.
ocr:
	@command -v tesseract >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
	    SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq tesseract-ocr tesseract-ocr-eng >/dev/null \
	      || echo "OCR: could not install tesseract-ocr; images are kept and embedded, not read"; \
	  else \
	    echo "OCR: Tesseract is not installed; install tesseract-ocr (apt) or tesseract (brew) to read text in images"; \
	  fi; }

run: $(STAMP) ocr
	$(BIN)/ai-employee start --vault AI_Employee_Vault $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src
	$(BIN)/lint-imports

# Two test processes, a file's tests in one (docs/decisions/0027): the suite waits on daemons,
# servers and deadlines more than it computes, so two halve its time on two cores.
test: lint ocr
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m bench

bench-smoke: $(STAMP)
	$(BIN)/python -m bench --smoke

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
