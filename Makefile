# conc — convenience wrapper around CMake. Everything here can also be done
# with cmake/ctest directly; see README.md.
#
#   make demo                 build quietly (log: build/demo-build.log), then run the
#                             tour (examples/tour.c); VERBOSE=1 shows the build,
#                             TOUR=queue runs one chapter
#   make docs                 the HTML API reference + guides (build/docs/html/index.html)
#   make demo-mpi             the MPI executor's tour under mpirun, 4 ranks (Open MPI)
#   make test                 install test deps if missing (root), build, ctest
#   make test-asan            the same suites under ASan+UBSan (build-asan/)
#   make test-tsan            the same suites under TSan (build-tsan/)
#   make bench [BENCH=sync]   benchmarks (build-bench/, Release); rows go to build/bench.jsonl
#   make install [PREFIX=/usr/local]
#   make install-test         install into a temp prefix, build a consumer with
#                             find_package(conc) and with pkg-config, run it
#   make werror               gcc and clang builds with -Werror (build-gcc/, build-clang/)
#   make demo-test            check `make demo` on a stand-in project (quiet; fails loudly)
#   make clean
#
# Variables: CC (compiler), WERROR=ON, BUILD_TYPE, JOBS, CTEST_ARGS, CMAKE_ARGS,
#            SAN_CTEST_JOBS (test programs at a time under a sanitizer, 2).

SHELL       := /bin/bash
CMAKE       ?= cmake
CTEST       ?= ctest
JOBS        ?= $(shell nproc 2>/dev/null || echo 2)
WERROR      ?= OFF
BUILD_TYPE  ?= RelWithDebInfo
PREFIX      ?= /usr/local
BENCH       ?=
VERBOSE     ?= 0
TOUR        ?=
CTEST_ARGS  ?=
CMAKE_ARGS  ?=

CONFIGURE = $(CMAKE) -S . -B $(1) -DCMAKE_BUILD_TYPE=$(2) -DCONC_WERROR=$(WERROR) $(CMAKE_ARGS)
RUN_CTEST = cd $(1) && $(CTEST) --output-on-failure --no-tests=error $(CTEST_ARGS)
# The sanitized suites run two test programs at a time (most of their time
# is waiting; the few that want the machine alone are RUN_SERIAL in
# CMakeLists.txt). SAN_CTEST_JOBS=1: one at a time.
SAN_CTEST_JOBS ?= 2

.PHONY: all build demo demo-test docs demo-mpi test test-deps test-asan test-tsan bench install install-test \
        werror werror-gcc werror-clang clean help

all: build

help:
	@sed -n '1,20p' Makefile | sed 's/^# \{0,1\}//'

build:
	$(call CONFIGURE,build,$(BUILD_TYPE))
	$(CMAKE) --build build -j $(JOBS)

# scripts/demo: the build's output goes to build/demo-build.log (VERBOSE=1:
# to the terminal); a failed build prints the log's tail and exits non-zero.
demo:
	@BUILD_DIR=build BUILD_TYPE=$(BUILD_TYPE) WERROR=$(WERROR) CMAKE_ARGS="$(CMAKE_ARGS)" \
	  JOBS=$(JOBS) VERBOSE=$(VERBOSE) TOUR="$(TOUR)" scripts/demo

demo-test:
	tests/demo/run

# Doxygen over include/conc/*.h + README.md and docs/*.md, then the checks
# (undocumented functions, broken links) and a look in headless Chromium
# (scripts/make-docs says what each step checks).
docs:
	scripts/make-docs

# The MPI tour (examples/mpi/tour_mpi.c), loopback only, oversubscribed,
# allowed as root (docs/mpi.md explains each setting).
MPIRUN_FLAGS = --oversubscribe --bind-to none --mca btl self,vader,tcp --mca btl_tcp_if_include lo \
               --mca oob_tcp_if_include lo --mca mpi_yield_when_idle 1
demo-mpi:
	$(call CONFIGURE,build,$(BUILD_TYPE))
	@$(CMAKE) --build build -j $(JOBS) --target tour_mpi || { \
	  echo "make demo-mpi: no tour_mpi target: is Open MPI installed? (apt-get install libopenmpi-dev openmpi-bin)" >&2; \
	  exit 1; }
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun $(MPIRUN_FLAGS) -n 4 ./build/tour_mpi

test-deps:
	scripts/install-test-deps

test: test-deps
	$(call CONFIGURE,build,$(BUILD_TYPE)) -DCONC_BUILD_TESTS=ON
	$(CMAKE) --build build -j $(JOBS)
	$(call RUN_CTEST,build)

# The sanitizer builds compile what the suites run: no examples (the plain
# and -Werror builds compile those) but the I/O model servers, no libconc_mpi.
test-asan: test-deps
	$(call CONFIGURE,build-asan,Debug) -DCONC_BUILD_TESTS=ON -DCONC_SANITIZE=address -DCONC_BUILD_EXAMPLES=OFF
	$(CMAKE) --build build-asan -j $(JOBS)
	$(call RUN_CTEST,build-asan) -j $(SAN_CTEST_JOBS)

# TSan needs a fixed memory layout; some kernels randomise mmap too much for
# it (high vm.mmap_rnd_bits). A probe decides whether to run with ASLR off.
test-tsan: test-deps
	$(call CONFIGURE,build-tsan,Debug) -DCONC_BUILD_TESTS=ON -DCONC_SANITIZE=thread -DCONC_BUILD_EXAMPLES=OFF
	$(CMAKE) --build build-tsan -j $(JOBS)
	@set -e; wrap=""; \
	if ! build-tsan/tsan_probe >/dev/null 2>&1; then \
	  if setarch "$$(uname -m)" -R build-tsan/tsan_probe >/dev/null 2>&1; then \
	    wrap="setarch $$(uname -m) -R"; \
	    echo "test-tsan: TSan needs ASLR off on this kernel; running under '$$wrap'"; \
	  else \
	    echo "test-tsan: ThreadSanitizer does not run on this machine, even with setarch -R:" >&2; \
	    build-tsan/tsan_probe || true; \
	    echo "  try: sysctl vm.mmap_rnd_bits=28" >&2; exit 1; \
	  fi; \
	fi; \
	cd build-tsan && $$wrap $(CTEST) --output-on-failure --no-tests=error $(CTEST_ARGS)

# bench/run (owned by the benchmarks) gets BUILD_DIR=build-bench and the
# module name (empty = all); it appends JSON lines to build/bench.jsonl.
bench:
	-scripts/install-bench-deps
	@if [ ! -x bench/run ]; then \
	  echo "make bench: bench/run does not exist (or is not executable) yet." >&2; exit 1; fi
	$(CMAKE) -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCONC_BENCH=ON \
	  -DCONC_BUILD_TESTS=OFF -DCONC_BUILD_EXAMPLES=OFF -DCONC_WERROR=$(WERROR) $(CMAKE_ARGS)
	$(CMAKE) --build build-bench -j $(JOBS)
	@mkdir -p build
	BUILD_DIR=build-bench bench/run $(BENCH)

install:
	$(call CONFIGURE,build,$(BUILD_TYPE)) -DCMAKE_INSTALL_PREFIX="$(PREFIX)"
	@targets="conc_shared conc_static"; \
	for t in conc_patch conc_mpi_shared conc_mpi_static; do \
	  if $(CMAKE) --build build --target help | grep -q "[. ]$$t$$"; then targets="$$targets $$t"; fi; \
	done; \
	echo "$(CMAKE) --build build -j $(JOBS) --target $$targets"; \
	$(CMAKE) --build build -j $(JOBS) --target $$targets
	$(CMAKE) --install build --prefix "$(PREFIX)"
	@pc=$$(find "$(PREFIX)" -path '*/pkgconfig/conc.pc' 2>/dev/null | head -n1); lib=$$(dirname "$$(dirname "$$pc")"); \
	echo; echo "conc is installed in $(PREFIX). To build a program against it (README: use it from your project):"; \
	echo "  pkg-config: export PKG_CONFIG_PATH=$$lib/pkgconfig"; \
	echo '              cc app.c -o app $$(pkg-config --cflags --libs conc) -Wl,-rpath,'"$$lib"; \
	echo "  CMake:      cmake -DCMAKE_PREFIX_PATH=$(PREFIX) ...   (find_package(conc), conc::conc)"; \
	echo "  without the rpath: LD_LIBRARY_PATH=$$lib ./app, or link $$lib/libconc.a -pthread (static)"; \
	case "$(PREFIX)" in /usr|/usr/local) echo "  a system prefix: run ldconfig once so programs find the new libconc.so";; esac

install-test:
	tests/install/run

werror: werror-gcc werror-clang

WERROR_BUILD = $(CMAKE) -S . -B build-$(1) -DCMAKE_C_COMPILER=$(1) -DCONC_WERROR=ON \
	-DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS) && $(CMAKE) --build build-$(1) -j $(JOBS)

werror-gcc:
	$(call WERROR_BUILD,gcc)

werror-clang:
	$(call WERROR_BUILD,clang)

clean:
	rm -rf build build-asan build-tsan build-bench build-gcc build-clang
