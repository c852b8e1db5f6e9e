# The two commands of the README, and what they need.  Everything lands in .venv/.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

## grade the demo submissions of both assignments into reports/<assignment>/
demo: $(STAMP)
	@# the demo's notebooks are the course's own, so they may run where no sandbox can be had (a real class may not)
	$(VENV)/bin/grader grade submissions/tutorial6 --assignment reference/tutorial6 --out reports/tutorial6 --allow-unsandboxed
	$(VENV)/bin/grader grade submissions/coursework --assignment reference/coursework --out reports/coursework

## run the test suite
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs

## the fast tier: everything that trains no network, runs no notebook and grades no class
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	$(VENV)/bin/python bench/bench_evaluate.py
	$(VENV)/bin/python bench/bench_notebook.py
	$(VENV)/bin/python bench/bench_batch.py
	$(VENV)/bin/python bench/bench_check.py
	$(VENV)/bin/python bench/bench_h5_class.py

clean:
	rm -rf $(VENV) reports
