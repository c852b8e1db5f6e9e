# The two commands of the README, and what they need.  Everything lands in .venv/.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-costs test-fast bench timings clean

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

## run the test suite, in TEST_WORKERS processes (each module's tests in one, so its fixtures are made once;
## the costliest modules first, as tests/module_seconds.json orders them)
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## measure each test module's cost again (tests/module_seconds.json: the order make test runs them in)
test-costs: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		--junitxml=$(VENV)/junit.xml || true
	$(VENV)/bin/python tests/costs.py $(VENV)/junit.xml

## the fast tier: everything that trains no network, runs no notebook and grades no class
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs -m "not slow"

## every benchmark: medians and ratios measured side by side (bench/; one at a time, on a quiet machine)
bench: $(STAMP)
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	$(VENV)/bin/python bench/bench_evaluate.py
	$(VENV)/bin/python bench/bench_notebook.py
	$(VENV)/bin/python bench/bench_fused_notebook.py
	$(VENV)/bin/python bench/bench_fused_equivalence.py
	$(VENV)/bin/python bench/bench_class.py
	$(VENV)/bin/python bench/bench_calibrate.py
	$(VENV)/bin/python bench/bench_loop.py
	$(VENV)/bin/python bench/bench_batch.py
	$(VENV)/bin/python bench/bench_check.py
	$(VENV)/bin/python bench/bench_h5_class.py

## record the reference notebook's timings again (the notebooks' time limits); the thresholds stay as they are
timings: $(STAMP)
	$(VENV)/bin/grader calibrate reference/tutorial6 --timings-only

clean:
	rm -rf $(VENV) reports
