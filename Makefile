# Cistern's entry points. Each target bootstraps the Debian packages it needs
# (scripts/bootstrap is idempotent), builds, and runs.
#
#   make demo    the main job end to end on the embedded default (release build)
#   make test    every test: unit + integration (stream fault runs among them) under
#                ASan+UBSan, unit under TSan, the Python package's pytest suite and the
#                stream kill-and-restart example against an unoptimised build (build/check),
#                and a short run of each fuzz harness (fuzz-smoke)
#   make stream-demo  a stream trainer killed and restarted mid-run; the ledger is checked
#   make cluster-demo a registry and three simulated hosts (root: network namespaces): a
#                safetensors model loaded on one, attached on the others, replicated to
#                all, the origin killed, the model still served
#   make bench   the side-by-side benchmarks (see docs/benchmarks.md)
#   make tsan    TSan build of the unit tests (the store's concurrency test among them)
#   make fuzz-smoke  each libFuzzer harness (tests/fuzz) for FUZZ_SMOKE_SECONDS (10); part of test
#   make fuzz    longer campaigns: FUZZ_SECONDS (default 600) per harness

JOBS ?= $(shell nproc)
CMAKE_COMMON = -G Ninja -DPython_EXECUTABLE=/usr/bin/python3 -DPYTHON_EXECUTABLE=/usr/bin/python3

.PHONY: all bootstrap build release asan tsan pytest pipcheck test demo stream-demo cluster-demo \
        bench clean \
        fuzz-build fuzz-smoke fuzz

all: build

bootstrap:
	@scripts/bootstrap

build/release/build.ninja: | bootstrap
	cmake -S . -B build/release $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=Release

# Clang: about twice as fast as GCC here, and its thread-safety analysis
# checks the lock annotations as the code compiles (CMakeLists.txt).
# The ASan tree keeps line tables only (-gline-tables-only): reports still name
# function, file and line, and a compile took 8% less than with -g. TSan's
# tree gained 4% from the same at -O1, so it and the fuzz tree keep
# RelWithDebInfo (docs/testing.md).
SANITIZER_DEBUG = -gline-tables-only
build/asan/build.ninja: | bootstrap
	CC=clang CXX=clang++ cmake -S . -B build/asan $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_C_FLAGS_DEBUG="$(SANITIZER_DEBUG)" -DCMAKE_CXX_FLAGS_DEBUG="$(SANITIZER_DEBUG)" \
	  -DCISTERN_SANITIZE=address -DCISTERN_BENCHMARKS=OFF

# What the Python tests run against: Clang at -O0 without debug info builds
# the Python targets in about 4 minutes here, where -O2 takes 7 (GCC and
# Clang alike). Demos and benchmarks use build/release.
build/check/build.ninja: | bootstrap
	CC=clang CXX=clang++ cmake -S . -B build/check $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_C_FLAGS_DEBUG=-O0 -DCMAKE_CXX_FLAGS_DEBUG=-O0

build/tsan/build.ninja: | bootstrap
	CC=clang CXX=clang++ cmake -S . -B build/tsan $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCISTERN_SANITIZE=thread

release: bootstrap build/release/build.ninja
	cmake --build build/release -j $(JOBS)

build: release

asan: bootstrap build/asan/build.ninja
	cmake --build build/asan -j $(JOBS)

tsan: bootstrap build/tsan/build.ninja
	cmake --build build/tsan -j $(JOBS) --target store_test common_test config_test daemon_test registry_test stream_test \
	  catalog_test registryd_test service_test transport_test cluster_unit_test
	# Tests over a gRPC channel are left out: see tests/tsan.supp. UCX's memory
	# hooks (its malloc/mmap interception) crash under TSan's own: UCX_MEM_EVENTS=no.
	cd build/tsan && TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" UCX_MEM_EVENTS=no \
	  ctest -L unit -E '^(Registry(Server|Tls)|PeerChannel(Tls)?)Test\.' --output-on-failure -j $(JOBS)

# libFuzzer harnesses (docs/testing.md), built by clang in build/fuzz with ASan
# and UBSan. Each run starts from the seeds in tests/fuzz/corpus/<name> (never
# written) and build/fuzz/corpus/<name> (what earlier runs found); a crash, a
# hang (-timeout) or unbounded memory (-rss_limit_mb) fails the target and
# leaves the input in build/fuzz/artifacts/<name>/. The per-harness log,
# with libFuzzer's final stats (executions, execs/s), is build/fuzz/<name>.log.
FUZZ_HARNESSES = frame config safetensors
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_SECONDS ?= 600
FUZZ_MAX_LEN_frame = 65536
FUZZ_MAX_LEN_config = 65536
FUZZ_MAX_LEN_safetensors = 262144
# Safetensors inputs go to the full -max_len from the start (a header nesting
# 100,000 '[' took 200 KB), rather than growing slowly as libFuzzer does by default.
FUZZ_FLAGS_safetensors = -len_control=0

build/fuzz/build.ninja: | bootstrap
	CC=clang CXX=clang++ cmake -S . -B build/fuzz $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCISTERN_SANITIZE=address -DCISTERN_FUZZ=ON

fuzz-build: bootstrap build/fuzz/build.ninja
	cmake --build build/fuzz -j $(JOBS) --target $(addprefix fuzz_,$(FUZZ_HARNESSES))

define run_fuzzers
	@set -e; for h in $(FUZZ_HARNESSES); do \
	  mkdir -p build/fuzz/corpus/$$h build/fuzz/artifacts/$$h; \
	  flags=; case $$h in frame) len=$(FUZZ_MAX_LEN_frame);; config) len=$(FUZZ_MAX_LEN_config);; \
	    *) len=$(FUZZ_MAX_LEN_safetensors); flags="$(FUZZ_FLAGS_safetensors)";; esac; \
	  echo "fuzz_$$h: $(1) s, -max_len=$$len"; \
	  if ! build/fuzz/tests/fuzz/fuzz_$$h -max_total_time=$(1) -max_len=$$len $$flags -timeout=10 \
	      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=build/fuzz/artifacts/$$h/ \
	      build/fuzz/corpus/$$h tests/fuzz/corpus/$$h > build/fuzz/$$h.log 2>&1; then \
	    tail -n 60 build/fuzz/$$h.log; echo "fuzz_$$h FAILED: see build/fuzz/artifacts/$$h/"; exit 1; \
	  fi; \
	  grep -E 'stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' build/fuzz/$$h.log; \
	done
endef

fuzz-smoke: fuzz-build
	$(call run_fuzzers,$(FUZZ_SMOKE_SECONDS))

fuzz: fuzz-build
	$(call run_fuzzers,$(FUZZ_SECONDS))

# What the Python tests run: the module and the binaries they start.
PY_TARGETS = _cistern cisternd cistern cistern-registry

# Debian's python3 with the package built into build/check/python.
pytest: bootstrap build/check/build.ninja
	cmake --build build/check -j $(JOBS) --target $(PY_TARGETS)
	PYTHONPATH=build/check/python:python/tests CISTERN_BUILD_DIR=build/check \
	  /usr/bin/python3 -m pytest -q python/tests
	bash examples/stream_kill_restart.sh build/check

# The package installs with pip into a venv of Debian's python3 (no downloads)
# and passes the client tests from there. pip's build (setup.py) takes the
# native module from build/check (CISTERN_CMAKE_BUILD_DIR) rather than
# compiling it all again in build/pip.
pipcheck: bootstrap build/check/build.ninja
	cmake --build build/check -j $(JOBS) --target $(PY_TARGETS)
	rm -rf build/venv
	/usr/bin/python3 -m venv --system-site-packages build/venv
	CISTERN_CMAKE_BUILD_DIR=$(CURDIR)/build/check \
	  build/venv/bin/pip install -q --no-build-isolation --no-deps .
	cd build && CISTERN_BUILD_DIR=$(CURDIR)/build/check PYTHONPATH=$(CURDIR)/python/tests \
	  venv/bin/python -m pytest -q $(CURDIR)/python/tests/test_client.py

test: asan
	cd build/asan && LSAN_OPTIONS="suppressions=$(CURDIR)/tests/lsan.supp" \
	  ctest --output-on-failure -j $(JOBS) --timeout 600
	$(MAKE) tsan
	$(MAKE) pytest
	$(MAKE) pipcheck
	$(MAKE) fuzz-smoke

demo: release
	scripts/demo.sh build/release

# A trainer killed mid-run and restarted: no sample lost, none retrained after a durable ack.
stream-demo: release
	bash examples/stream_kill_restart.sh build/release

# Needs root: scripts/cluster-sim makes the hosts out of network namespaces.
cluster-demo: release
	scripts/cluster-demo.sh build/release

bench: release
	bash bench/run.sh

clean:
	rm -rf build
