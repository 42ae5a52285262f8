# Cistern's entry points. Each target bootstraps the Debian packages it needs
# (scripts/bootstrap is idempotent), builds, and runs.
#
#   make demo    the main job end to end on the embedded default (release build)
#   make test    every test: unit + integration (stream fault runs among them) under
#                ASan+UBSan, unit under TSan, the Python package's pytest suite and the
#                stream kill-and-restart example against a release build
#   make stream-demo  a stream trainer killed and restarted mid-run; the ledger is checked
#   make bench   the side-by-side benchmarks (see docs/benchmarks.md)
#   make tsan    TSan build of the unit tests (the store's concurrency test among them)

JOBS ?= $(shell nproc)
CMAKE_COMMON = -G Ninja -DPython_EXECUTABLE=/usr/bin/python3 -DPYTHON_EXECUTABLE=/usr/bin/python3

.PHONY: all bootstrap build release asan tsan pytest pipcheck test demo stream-demo bench clean

all: build

bootstrap:
	@scripts/bootstrap

build/release/build.ninja: | bootstrap
	cmake -S . -B build/release $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=Release

build/asan/build.ninja: | bootstrap
	cmake -S . -B build/asan $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=Debug -DCISTERN_SANITIZE=address

build/tsan/build.ninja: | bootstrap
	cmake -S . -B build/tsan $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCISTERN_SANITIZE=thread

release: bootstrap build/release/build.ninja
	cmake --build build/release -j $(JOBS)

build: release

asan: bootstrap build/asan/build.ninja
	cmake --build build/asan -j $(JOBS)

tsan: bootstrap build/tsan/build.ninja
	cmake --build build/tsan -j $(JOBS) --target store_test common_test daemon_test registry_test stream_test
	cd build/tsan && TSAN_OPTIONS=halt_on_error=1 ctest -L unit --output-on-failure -j $(JOBS)

# Debian's python3 with the package built into build/release/python.
pytest: bootstrap build/release/build.ninja
	cmake --build build/release -j $(JOBS) --target _cistern cisternd cistern
	PYTHONPATH=build/release/python:python/tests CISTERN_BUILD_DIR=build/release \
	  /usr/bin/python3 -m pytest -q python/tests
	bash examples/stream_kill_restart.sh build/release

# The package installs with pip into a venv of Debian's python3 (no downloads)
# and passes the client tests from there.
pipcheck: bootstrap release
	rm -rf build/venv
	/usr/bin/python3 -m venv --system-site-packages build/venv
	build/venv/bin/pip install -q --no-build-isolation --no-deps .
	cd build && CISTERN_BUILD_DIR=$(CURDIR)/build/release PYTHONPATH=$(CURDIR)/python/tests \
	  venv/bin/python -m pytest -q $(CURDIR)/python/tests/test_client.py

test: asan
	cd build/asan && ctest --output-on-failure -j $(JOBS) --timeout 600
	$(MAKE) tsan
	$(MAKE) pytest
	$(MAKE) pipcheck

demo: release
	scripts/demo.sh build/release

# A trainer killed mid-run and restarted: no sample lost, none retrained after a durable ack.
stream-demo: release
	bash examples/stream_kill_restart.sh build/release

bench: release
	bash bench/run.sh

clean:
	rm -rf build
