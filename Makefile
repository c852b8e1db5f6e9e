# The two commands of the README, and what they need.  Everything lands in .venv/.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

## grade the demo submissions into reports/
demo: $(STAMP)
	$(VENV)/bin/grader grade submissions --assignment reference/tutorial6 --out reports

## run the test suite
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	$(VENV)/bin/python bench/bench_evaluate.py
	$(VENV)/bin/python bench/bench_notebook.py

clean:
	rm -rf $(VENV) reports
