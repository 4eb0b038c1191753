# Two commands on a fresh machine with Python 3.11:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP_BASE := $(VENV)/.installed-base
STAMP_TEST := $(VENV)/.installed-test

.PHONY: demo test install clean

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3

# The stamps depend on setup.py, so a changed pin reinstalls. setuptools' build backend warns on every
# editable install that folders named like the package may shadow it (they are it, here): not shown.
QUIET_BUILD := PYTHONWARNINGS=ignore::UserWarning

$(STAMP_BASE): setup.py | $(PY)
	$(QUIET_BUILD) $(PY) -m pip install --quiet -e .
	@touch $@

# t5 (the tests' reference for span corruption, GLUE formats and metrics) goes in without its declared
# dependencies, which would replace the pinned seqio and tensorflow-datasets by nightly builds; what its
# imports need is pinned in setup.py's test extra.
T5_REFERENCE := t5==0.9.4

$(STAMP_TEST): setup.py Makefile | $(PY)
	$(QUIET_BUILD) $(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps "$(T5_REFERENCE)"
	@touch $@ $(STAMP_BASE)

install: $(STAMP_BASE)

demo: $(STAMP_BASE)
	$(PY) -m miniend_jax.demo

test: $(STAMP_TEST)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
