# The two commands: `make demo` runs the main job, `make test` runs the tests.
# Both install what they need (tools/bootstrap.sh): uv, the Python packages, and Debian
# packages when run as root.
SHELL := /bin/bash
UV := $(CURDIR)/.tools/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := python3

.PHONY: demo test deps lint typecheck pytest bench clean appliance

deps:
	@sh tools/bootstrap.sh
	@$(UV) sync --frozen --quiet

demo: deps
	@sh tools/bootstrap.sh virt
	@bash examples/demo.sh

# The test appliance (kernel, initrd, qcow2 disk, LXC root filesystem), cached in .tools/.
appliance: deps
	@sh tools/bootstrap.sh virt
	$(UV) run --frozen stratus appliance build --out $(CURDIR)/.tools/appliance

test: deps
	@sh tools/bootstrap.sh postgres virt net
	$(MAKE) --no-print-directory lint typecheck pytest

lint:
	$(UV) run --frozen ruff check src tests bench
	$(UV) run --frozen ruff format --check src tests bench

typecheck:
	$(UV) run --frozen mypy

pytest:
	$(UV) run --frozen pytest -q

bench: deps
	$(UV) run --frozen python bench/bench_scheduler.py
	$(UV) run --frozen python bench/bench_e2e.py
	$(UV) run --frozen python bench/bench_api.py
	$(UV) run --frozen python bench/bench_memory.py

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache
