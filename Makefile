# The two set-up commands of the README:
#   make book   set up, prepare the embedded dataset, run every notebook of the default
#               profile through papermill, build the Jupyter Book (HTML)
#   make test   set up, run the test suite
#   make check-book   after `make book`: open every page in headless Chromium, check that every
#               image loaded, the results table is there and no table, figure or output is
#               wider than the page's column; save screenshots
# Both are idempotent: the venv is reinstalled only when requirements.txt changes, and
# stages whose artifacts exist for the same parameters are skipped.
SHELL := /bin/bash
PYTHON ?= python3
PROFILE ?= default
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aepsl-installed

.PHONY: setup fashion-mnist chromium notebooks book check-book test test-fast results book-time studies seeds clean-book

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@start=$$(date +%s); \
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || exit 1; \
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt || exit 1; \
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e . || exit 1; \
	echo $$(( $$(date +%s) - start )) > $(VENV)/.aepsl-setup-seconds
	@touch $@

# Fashion-MNIST for the embedded default: Debian's package when we may install it.
# Without it the data notebook stops with one message listing the three ways to provide it.
fashion-mnist:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "$$AEPSL_FASHION_MNIST" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "[make] installing the Debian package dataset-fashion-mnist"; \
	    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	     (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null)) \
	     || echo "[make] could not install dataset-fashion-mnist"; \
	  else echo "[make] Fashion-MNIST not found; see data/README.md"; fi; \
	fi

# Headless Chromium for the book check: Debian's chromium + chromium-driver when we may install
# them. Without them `make check-book` stops with one message and the test suite skips the check.
chromium:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "[make] installing the Debian packages chromium and chromium-driver"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	     (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)) \
	     || echo "[make] could not install chromium and chromium-driver"; \
	  else echo "[make] chromium/chromedriver not found: install the Debian packages chromium and chromium-driver"; fi; \
	fi

notebooks: setup fashion-mnist
	$(PY) -m aepsl --profile $(PROFILE) --book

book: notebooks
	$(PY) -m aepsl.book.viz --pipeline-figure book/figures/pipeline.png --profile $(PROFILE)
	$(VENV)/bin/jupyter-book build book --builder html -W -n --keep-going
	@echo "The book: $(CURDIR)/book/_build/html/index.html"

# after `make book`: every page of book/_build/html in headless Chromium; screenshots and
# report.json in book/_build/screenshots/
check-book: setup chromium
	$(PY) -m aepsl.book.check

# after `make book` (and `make book PROFILE=extended`): write benchmarks/results.md from the saved metrics
results:
	$(PY) benchmarks/record_results.py --profile default extended

# `make book` from empty artifacts, timed in one go -> benchmarks/book_time.json (run nothing else meanwhile)
book-time: setup
	$(PY) benchmarks/book_time.py --profile $(PROFILE)
	$(PY) -m aepsl.book.readme

# the seeds study: the book's chain for training seeds 0-4, and at training seed 0 on two scene
# sets drawn anew, each chain recorded in benchmarks/seeds.json, then the CAM-variants stage of
# each training seed's chain in benchmarks/cam_variants_seeds.json, with the segmenter on the best
# variant's seeds for seeds 0-2 (a chain alone takes about 10 minutes on two cores with bfloat16,
# a segmenter run about 2: after `make book`, whose chain is seed 0's, the rest took 70 minutes;
# stages done for the same parameters are reused; DRY_RUN=1 checks every run's parameters and runs
# nothing)
seeds: setup fashion-mnist
	$(PY) benchmarks/seeds.py --seeds 0 1 2 3 4 $(if $(DRY_RUN),--dry-run)
	$(PY) benchmarks/seeds.py --profile 'benchmarks/designs.yaml#scenes-1' --seeds 0 $(if $(DRY_RUN),--dry-run)
	$(PY) benchmarks/seeds.py --profile 'benchmarks/designs.yaml#scenes-2' --seeds 0 $(if $(DRY_RUN),--dry-run)
	for k in 0 1 2; do $(PY) -m aepsl.stages --profile 'benchmarks/designs.yaml#variant-segmenter' --seed $$k \
	  --no-progress $(if $(DRY_RUN),--check) || exit 1; done
	$(if $(DRY_RUN),,$(PY) benchmarks/cam_variants_seeds.py --seeds 0 1 2 3 4)

# the design studies of benchmarks/designs.yaml, run and recorded (hours of CPU; the book's chain
# first): `make studies` runs every design and seed, DESIGN=prior-0.2 one design, SEED=1 one seed,
# DRY_RUN=1 checks every run's parameters and runs nothing
studies: setup fashion-mnist
	$(PY) benchmarks/erasing_design.py $(if $(DESIGN),--design $(DESIGN),--all) $(if $(SEED),--seed $(SEED)) $(if $(DRY_RUN),--dry-run)

# The suite runs in TEST_PROCESSES processes (pytest-xdist; each test runs single-threaded, see
# tests/conftest.py). --dist loadgroup keeps the tests that share an expensive fixture (the quick
# profile's run, a file's module-scoped training) in one process, so each is computed once.
# TEST_PROCESSES=0 runs the suite in this process alone.
TEST_PROCESSES ?= 2
PYTEST_PARALLEL := -n $(TEST_PROCESSES) --dist loadgroup

test: setup
	$(PY) -m pytest -q $(PYTEST_PARALLEL)

# day-to-day: the suite without the notebook, book and other slow end-to-end tests
test-fast: setup
	$(PY) -m pytest -q $(PYTEST_PARALLEL) -m "not notebooks and not slow"

clean-book:
	rm -rf book/_build book/notebooks
