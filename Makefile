# neurowire: `make` installs the package (compiling the C core) into .venv and builds the
# native ./encode and ./decode; `make test` does the same first, so it works on a fresh clone.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CC     ?= cc

CSRC := $(wildcard codec_c/src/*.c)
# The challenge tools code files with the version 1 blocks alone: no thread team and no
# lane format in them (their byte size counts in the score). The fuzz target adds the lanes.
CORE_SRC := $(filter-out codec_c/src/nw_team.c codec_c/src/nw_lanes%,$(CSRC))
CHDR := $(wildcard codec_c/src/*.h)
# The daemon's C data path (a cffi extension of its own, beside the codec's).
DAEMON_C := $(wildcard daemon/src/*.c daemon/src/*.h) daemon/build_fastpath.py

# The tools' byte sizes count in the challenge score: optimise for size, drop unused
# functions and sections, unwind tables, build ids, relro padding and PIE relocations.
# -fno-schedule-insns2 packs smaller at the same speed. (Scalar code, -mno-sse2, packs 350
# bytes smaller but takes ~1.5x the time per file.)
TOOL_CFLAGS  := -std=c99 -Os -Icodec_c/src -ffunction-sections -fdata-sections \
                -fno-asynchronous-unwind-tables -fno-unwind-tables -fno-stack-protector \
                -fno-ident -fno-pie -fno-plt -fno-schedule-insns2
TOOL_LDFLAGS := -s -no-pie -Wl,--gc-sections -Wl,--as-needed -Wl,--build-id=none \
                -Wl,-z,norelro -Wl,-z,noseparate-code -Wl,--hash-style=gnu -Wl,--no-eh-frame-hdr
TOOL_LIBS    := -lm
# On x86-64 Linux ./encode is that program packed (codec_c/tools/pack.c, pack_model.h) behind
# a freestanding loader (codec_c/tools/unpack.c) that unpacks it into an in-memory file and
# executes it: ~40% fewer bytes, ~12 ms more per run. Its code is read-only and its state all
# bss (no writable and executable segment, no data bytes). PACK_TOOL=0 builds the plain program.
PACK_TOOL ?= $(if $(filter x86_64-Linux,$(shell uname -m)-$(shell uname -s)),1,0)
LOADER_CFLAGS := -std=c99 -Os -static -nostdlib -ffreestanding -fno-pie -no-pie \
                 -fno-asynchronous-unwind-tables -fno-unwind-tables -fno-stack-protector -fno-ident \
                 -fno-tree-loop-distribute-patterns
LOADER_LDFLAGS := -s -Wl,-z,noseparate-code -Wl,--build-id=none -Wl,-z,norelro \
                  -Wl,-z,noexecstack -Wl,--gc-sections

ASAN_VENV := build/venv-asan
LIBASAN    = $(shell $(CC) -print-file-name=libasan.so)
FUZZ_BIN  := build/fuzz_decode
FUZZ_TIME ?= 60

.PHONY: all install tools test bench run asan tsan fuzz fuzz-spool golden clean

all: install tools

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Editable install: Python edits are live, and the stamp re-runs pip (recompiling the
# extension) whenever the C sources or the build description change.
$(VENV)/.installed: $(PY) pyproject.toml setup.py codec_c/build_ffi.py $(CSRC) $(CHDR) $(DAEMON_C) \
                   clients/build_sub_loop.py clients/build_sim_loop.py $(wildcard clients/src/*)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed

# One binary for both directions (its bytes are counted once): ./decode is a two-line script
# that runs `./encode -d IN OUT` from its own folder (see docs/CONTRACTS.md).
# The program, cut after its last loaded byte (section headers are for tools, not the kernel).
build/tool/encode.elf: codec_c/tools/nw_tool.c $(CORE_SRC) $(CHDR) build/tool/pack
	$(CC) $(TOOL_CFLAGS) $(TOOL_LDFLAGS) -o $@ codec_c/tools/nw_tool.c $(CORE_SRC) $(TOOL_LIBS)
	build/tool/pack strip $@

build/tool/pack: codec_c/tools/pack.c codec_c/tools/pack_model.h
	@mkdir -p $(@D)
	$(CC) -std=c99 -O2 -o $@ codec_c/tools/pack.c

build/tool/packed.h: build/tool/encode.elf build/tool/pack
	build/tool/pack build/tool/encode.elf $@

ifeq ($(PACK_TOOL),1)
encode: codec_c/tools/unpack.c codec_c/tools/pack_model.h build/tool/packed.h
	$(CC) $(LOADER_CFLAGS) -Ibuild/tool $(LOADER_LDFLAGS) -o $@ codec_c/tools/unpack.c
	build/tool/pack strip $@
else
encode: build/tool/encode.elf
	cp build/tool/encode.elf $@
endif

decode: codec_c/tools/decode.sh encode
	install -m 755 codec_c/tools/decode.sh $@

tools: encode decode
	@echo "tool sizes (bytes):"; wc -c encode decode

test: install tools
	$(VENV)/bin/pytest tests/

# Baseline codecs (FLAC, WavPack) are an extra that plain installs skip.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@$(PY) -m pip install --quiet --only-binary :all: 'wavpack-numcodecs>=0.2' 2>/dev/null \
		|| echo "WavPack baseline: no wheel for this platform, its row says 'not installed'"
	@touch $@

bench: install $(VENV)/.bench-installed
	$(PY) bench/bench_codec.py
	@test ! -f bench/bench_archive.py || $(PY) bench/bench_archive.py

# The product working on this machine: everything `make` builds, then `neurowire demo`
# (neurowire/demo.py) checks the machine's capacity, says whether the default 1024 channels
# fit, streams simulator -> daemon -> lossless subscriber on loopback at the largest size
# that does, checks every sample after the stream, and ends with what ran, what was lost and
# the latency (non-zero exit, with the reason, when anything was lost).
run: install tools
	$(VENV)/bin/neurowire demo

# C core built with ASan+UBSan into its own venv (so the normal build stays untouched);
# python itself is not instrumented, hence the preloaded runtime and no leak checks.
# By hand: NEUROWIRE_SANITIZE=1 pip install . in any venv, then run pytest with
# LD_PRELOAD=$$(cc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0; capture=sys
# keeps a sanitizer report (written to fd 2) on screen when it aborts the run.
# The daemon's C data path and the subscriber's receive and spooling loops, in process (the
# tests that start the daemon or a client as `python -m` from the clone would import the
# clone's neurowire/ folder before the installed package).
ASAN_C_PATHS := tests/test_fastpath.py tests/test_spool.py tests/test_subscribe_batch.py
asan:
	@test -x $(ASAN_VENV)/bin/python || $(PYTHON) -m venv $(ASAN_VENV)
	rm -rf build/lib.* build/temp.*
	$(ASAN_VENV)/bin/python -m pip install --quiet pytest hypothesis pytest-timeout
	NEUROWIRE_SANITIZE=1 $(ASAN_VENV)/bin/python -m pip install --quiet .
	LD_PRELOAD=$(LIBASAN) \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(ASAN_VENV)/bin/pytest -p no:cacheprovider --capture=sys \
		$(wildcard tests/test_codec*.py tests/test_fuzz*.py) $(ASAN_C_PATHS)

# The codec team (the only threaded C) under ThreadSanitizer: sleeping and polling helpers,
# every block round-tripped. tests/test_codec_groups.py builds and runs the same program.
TSAN_BIN := build/team_stress
tsan:
	mkdir -p build
	$(CC) -g -O1 -std=c99 -pthread -fsanitize=thread -Icodec_c/src -o $(TSAN_BIN) \
		codec_c/stress/team_stress.c $(CSRC)
	$(TSAN_BIN)

# libFuzzer needs clang and its runtime (compiler-rt: Debian's libclang-rt-N-dev, which
# `apt-get install --no-install-recommends clang` leaves out); without them the fuzz targets
# say what is missing and skip. New inputs go to build/, the committed corpus only seeds.
FUZZ_TOOLCHAIN = if ! command -v clang >/dev/null; then \
		echo "make $@: clang not found (Debian: apt-get install -y clang); skipped"; exit 0; fi; \
	if ! printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return (int)(0 * n * !d); }\n' \
		| clang -x c -fsanitize=fuzzer,address,undefined -o /dev/null - 2>/dev/null; then \
		echo "make $@: clang cannot link libFuzzer with ASan: its runtime is missing (Debian:" \
			"apt-get install -y libclang-rt-$$(clang -dumpversion | cut -d. -f1)-dev); skipped"; exit 0; fi
fuzz:
	@$(FUZZ_TOOLCHAIN); \
	mkdir -p build/fuzz-corpus && \
	clang -g -O1 -std=c99 -fsanitize=fuzzer,address,undefined -Icodec_c/src \
		-o $(FUZZ_BIN) codec_c/fuzz/fuzz_decode.c $(CORE_SRC) $(wildcard codec_c/src/nw_lanes*.c) && \
	$(FUZZ_BIN) -max_total_time=$(FUZZ_TIME) -max_len=65536 -timeout=10 \
		-artifact_prefix=build/ build/fuzz-corpus codec_c/fuzz/corpus

# The subscriber's spooling checks (clients/src/spool_loop.c) the same way.
FUZZ_SPOOL_BIN := build/fuzz_spool
fuzz-spool:
	@$(FUZZ_TOOLCHAIN); \
	mkdir -p build/fuzz-spool-corpus && \
	clang -g -O1 -std=c99 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-Iclients/src -Icodec_c/src -o $(FUZZ_SPOOL_BIN) clients/fuzz/fuzz_spool.c \
		clients/src/spool_loop.c clients/src/sub_loop.c && \
	$(FUZZ_SPOOL_BIN) -max_total_time=$(FUZZ_TIME) -max_len=4096 -timeout=10 \
		-artifact_prefix=build/ build/fuzz-spool-corpus clients/fuzz/corpus

# After a deliberate bitstream change (which, once streams exist in the wild, also means a
# new NW_FORMAT_VERSION): re-make the codec's golden files and the fuzz seeds.
golden: install
	$(PY) tests/data/golden/regenerate.py
	$(PY) codec_c/fuzz/make_corpus.py
	git status --short tests/data/golden codec_c/fuzz/corpus

clean:
	rm -rf build encode decode codec_c/_native*.so codec_c/_native.c *.egg-info
