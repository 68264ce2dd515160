# hurrahdb: build, test, demo and benchmark.
#
#   make                 build the module for Lua 5.4 (build/5.4/hurrahdb.so)
#   make test            run the busted specs against that build
#   make check           a fast subset of them (no nginx, no kill loops, no #slow)
#   make demo            run examples/quickstart.lua
#   make bench           run the benchmarks in bench/
#   make test SANITIZE=1 the specs with AddressSanitizer + UndefinedBehaviorSanitizer
#   make valgrind        the specs under valgrind memcheck
#   make fuzz            libFuzzer on the AOF loader and the value decoder (FUZZ_SECONDS each, default 60)
#   make LUA=luajit ...  the same for LuaJIT 2.1 (OpenResty's luajit2)
#   make check-exports   the module exports luaopen_hurrahdb and nothing else
#   make rock rock-install  the rockspec's build (luarocks runs these)
#
# Missing Debian packages are installed with apt-get when run as root (or with
# passwordless sudo); otherwise the exact command to run is printed.

LUA ?= lua5.4
SANITIZE ?=

ifeq ($(LUA),luajit)
LUA_BIN := luajit
LUA_INC := /usr/include/luajit-2.1
LUA_PKGS := luajit2 libluajit2-5.1-dev
LUA_VER := 5.1
BUILD := build/luajit
else ifeq ($(LUA),lua5.4)
LUA_BIN := lua5.4
LUA_INC := /usr/include/lua5.4
LUA_PKGS := lua5.4 liblua5.4-dev
LUA_VER := 5.4
BUILD := build/5.4
else
$(error LUA must be lua5.4 or luajit)
endif

CC ?= cc
OPT := -O2
SAN_FLAGS :=
SAN_ENV :=
SAN_PRELOAD :=
ifeq ($(SANITIZE),1)
BUILD := $(BUILD)-sanitize
OPT := -O1 -fno-omit-frame-pointer
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined
# The interpreter is not instrumented: preload the runtimes so they are first.
SAN_PRELOAD := $(shell $(CC) -print-file-name=libasan.so) $(shell $(CC) -print-file-name=libubsan.so)
# The fork stress (spec/07) is not run here: under this build (only) a
# child sometimes sleeps for good on a futex inside the ASan heap, which
# is not yet explained (GCC 12's ASan runtime has no fork handlers). It
# runs natively (300 forks) and under valgrind.
SAN_ENV := LD_PRELOAD="$(SAN_PRELOAD)" HURRAHDB_FORKS=$${HURRAHDB_FORKS:-0} \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/spec/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
endif

# What every build of the module needs, the rock's included. Hidden
# visibility: the module exports luaopen_hurrahdb only (check-exports), so
# the engine's generic names (table_init, lock_acquire, ...) cannot clash
# with another C module loaded in the same process, an nginx worker say.
MODULE_CFLAGS := -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden -pthread
CFLAGS_ALL := $(MODULE_CFLAGS) $(OPT) -g \
	-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	$(SAN_FLAGS) $(CFLAGS)
# -z nodelete: the module stays mapped after dlclose (lua_close unloads C
# modules), since a flusher thread of a store that outlives its Lua state,
# and the exit handler, run its code until the process ends.
MODULE_LDFLAGS := -pthread -Wl,-z,nodelete
LDFLAGS_ALL := -shared $(MODULE_LDFLAGS) $(SAN_FLAGS) $(LDFLAGS)

# The module's sources, for every build (this one, the rock's, the engine's
# test program). A new engine file is added to ENGINE_SRC, and only there.
# The engine is compiled without Lua's headers, the binding with them.
ENGINE_SRC := src/hdb_buf.c src/hdb_siphash.c src/hdb_crc32c.c src/hdb_table.c \
	src/hdb_aof.c src/hdb_file.c src/hdb_flusher.c src/hdb_lock.c src/hdb_store.c src/hdb_dtoa.c \
	src/hdb_thread.c src/hdb_rewrite.c src/hdb_err.c src/hdb_check.c
BINDING_SRC := src/lvalue.c src/lhurrahdb.c
HEADERS := $(wildcard src/*.h)
ENGINE_OBJ := $(ENGINE_SRC:src/%.c=$(BUILD)/%.o)
BINDING_OBJ := $(BINDING_SRC:src/%.c=$(BUILD)/%.o)
MODULE := $(BUILD)/hurrahdb.so
ENGINE_TEST := $(BUILD)/engine_test
FAULT_SHIM := $(BUILD)/fault_shim.so
TESTLIB := $(BUILD)/hdb_testlib.so
TEST_TOOLS := $(ENGINE_TEST) $(FAULT_SHIM) $(TESTLIB)

RUN_ENV := LUA_CPATH="$(CURDIR)/$(BUILD)/?.so;;" LUA_PATH="$(CURDIR)/lua/?.lua;;" $(SAN_ENV)
# The specs also get the engine's test program and the write-fault shim,
# preloaded (after the sanitizer runtimes, which must come first).
TEST_ENV := $(RUN_ENV) HURRAHDB_ENGINE_TEST="$(CURDIR)/$(ENGINE_TEST)" \
	HURRAHDB_FAULTS="$(CURDIR)/$(BUILD)/faults" \
	HURRAHDB_LUAJIT_CPATH="$(CURDIR)/build/luajit" \
	LD_PRELOAD="$(SAN_PRELOAD) $(CURDIR)/$(FAULT_SHIM)"
BUSTED = $$(command -v busted || echo /usr/bin/busted)

.PHONY: all test check demo bench valgrind fuzz clean deps-build deps-test deps-check deps-bench deps-fuzz \
	nginx-module check-exports rock rock-install

all: deps-build $(MODULE)

$(BUILD):
	@mkdir -p $(BUILD)

# The engine never sees Lua's headers: it is built without them on purpose.
$(ENGINE_OBJ): $(BUILD)/%.o: src/%.c $(HEADERS) | $(BUILD)
	@echo "CC $<"; $(CC) $(CFLAGS_ALL) -c $< -o $@

$(BINDING_OBJ): $(BUILD)/%.o: src/%.c $(HEADERS) | $(BUILD)
	@echo "CC $<"; $(CC) $(CFLAGS_ALL) -I$(LUA_INC) -c $< -o $@

$(MODULE): $(ENGINE_OBJ) $(BINDING_OBJ)
	@echo "LD $@"; $(CC) $(LDFLAGS_ALL) -o $@ $^

# The engine's own checks, run by spec/00-engine_spec.lua.
$(ENGINE_TEST): spec/engine_test.c $(ENGINE_OBJ) $(HEADERS)
	@echo "LD $@"; $(CC) $(filter-out -fPIC,$(CFLAGS_ALL)) -Isrc -o $@ spec/engine_test.c $(ENGINE_OBJ) -pthread -lm $(SAN_FLAGS)

# Test-only: write faults for *.aof files (LD_PRELOAD), and fork for specs.
# The shim is built without sanitizers: it must load into any process.
$(FAULT_SHIM): spec/fault_shim.c | $(BUILD)
	@echo "LD $@"; $(CC) -O1 -g -fPIC -shared -Wall -Wextra -Werror -o $@ $< -ldl
$(TESTLIB): spec/testlib.c src/lcompat.h src/hdb_crc32c.c src/hdb_crc32c.h | $(BUILD)
	@echo "LD $@"; $(CC) $(CFLAGS_ALL) -Isrc -I$(LUA_INC) -shared -o $@ $< src/hdb_crc32c.c

# The nginx specs run workers on LuaJIT: they load the plain LuaJIT build
# whichever Lua runs busted.
nginx-module:
	@$(MAKE) --no-print-directory LUA=luajit SANITIZE= all

test: deps-test all nginx-module $(TEST_TOOLS)
	@for so in $(sort $(MODULE) build/luajit/hurrahdb.so); do \
		$(MAKE) --no-print-directory check-exports SO=$$so || exit 1; done
	@: > $(BUILD)/faults
	$(TEST_ENV) $(LUA_BIN) $(BUSTED) $(BUSTED_ARGS)

# Everyday work: the specs but the nginx ones (09), the kill loops (08),
# those tagged #slow (each a second or more) and those that need the LuaJIT
# build (#luajit, which only make test makes); under 30 s.
CHECK_SPECS := $(filter-out spec/08-crash_spec.lua spec/09-openresty_spec.lua,$(wildcard spec/*_spec.lua))
check: deps-check all $(TEST_TOOLS)
	@: > $(BUILD)/faults
	$(TEST_ENV) $(LUA_BIN) $(BUSTED) --exclude-tags=slow,luajit $(BUSTED_ARGS) $(CHECK_SPECS)

demo: all
	$(RUN_ENV) $(LUA_BIN) examples/quickstart.lua

# The suite in bench/bench.lua (Lua 5.4): hurrahdb, Lua tables, Redis (and
# redis-benchmark), SQLite and the disk's own limit, then bench/nginx.lua:
# loops inside an nginx worker and HTTP with wrk (LuaJIT). Writes
# bench/RESULTS.md and bench/results.png. BENCH_ARGS: see bench/bench.lua.
BENCHLIB := $(BUILD)/hdb_benchlib.so
$(BENCHLIB): bench/benchlib.c src/lcompat.h | $(BUILD)
	@echo "LD $@"; $(CC) $(CFLAGS_ALL) -Isrc -I$(LUA_INC) -shared -o $@ $<

bench: deps-bench all nginx-module $(BENCHLIB)
	@[ "$(LUA)" = lua5.4 ] || { echo "make bench runs on Lua 5.4 (its nginx part runs LuaJIT)"; exit 1; }
	$(RUN_ENV) HURRAHDB_LUAJIT_CPATH="$(CURDIR)/build/luajit" $(LUA_BIN) bench/bench.lua $(BENCH_ARGS)

# Memory errors, not crash statistics: the kill -9 loops run 5 times each
# here (the native run does them in full).
valgrind: deps-test all nginx-module $(TEST_TOOLS)
	@$(MAKE) --no-print-directory deps PKGS=valgrind
	@: > $(BUILD)/faults
	$(TEST_ENV) HURRAHDB_KILLS=$${HURRAHDB_KILLS:-5} HURRAHDB_FORKS=$${HURRAHDB_FORKS:-10} valgrind --error-exitcode=99 --leak-check=full \
		--errors-for-leak-kinds=definite --show-leak-kinds=definite --track-fds=no --quiet \
		$(LUA_BIN) $(BUSTED) $(BUSTED_ARGS)

# libFuzzer, with ASan and UBSan, for FUZZ_SECONDS each: on the AOF loader
# (seed corpus spec/fuzz/corpus) and on the value decoder, in Lua 5.4 (seed
# corpus spec/fuzz/value-corpus). The corpora are copied, so that the run's
# finds stay in build/.
FUZZ_SECONDS ?= 60
FUZZ_DIR := build/fuzz
FUZZER := $(FUZZ_DIR)/aof_load_fuzz
VALUE_FUZZER := $(FUZZ_DIR)/value_decode_fuzz
FUZZ_SRC := src/hdb_aof.c src/hdb_table.c src/hdb_crc32c.c src/hdb_siphash.c src/hdb_buf.c \
	src/hdb_err.c
VALUE_FUZZ_SRC := src/lvalue.c src/hdb_dtoa.c src/hdb_buf.c
FUZZ_CFLAGS := -std=c99 -D_POSIX_C_SOURCE=200809L -D_GNU_SOURCE -g -O1 -Isrc -Wall -Wextra -Werror \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_RUN = -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	-detect_leaks=1 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/crashes/

$(FUZZER): spec/fuzz/aof_load_fuzz.c $(FUZZ_SRC) $(HEADERS)
	@mkdir -p $(FUZZ_DIR)
	clang $(FUZZ_CFLAGS) -o $@ spec/fuzz/aof_load_fuzz.c $(FUZZ_SRC) -pthread

$(VALUE_FUZZER): spec/fuzz/value_decode_fuzz.c $(VALUE_FUZZ_SRC) $(HEADERS)
	@mkdir -p $(FUZZ_DIR)
	clang $(FUZZ_CFLAGS) -I/usr/include/lua5.4 -o $@ spec/fuzz/value_decode_fuzz.c \
		$(VALUE_FUZZ_SRC) -llua5.4 -lm -pthread

fuzz: deps-fuzz $(FUZZER) $(VALUE_FUZZER)
	@mkdir -p $(FUZZ_DIR)/corpus $(FUZZ_DIR)/value-corpus $(FUZZ_DIR)/crashes
	cp spec/fuzz/corpus/* $(FUZZ_DIR)/corpus/
	cp spec/fuzz/value-corpus/* $(FUZZ_DIR)/value-corpus/
	$(FUZZER) $(FUZZ_RUN) -max_len=4096 $(FUZZ_DIR)/corpus
	$(VALUE_FUZZER) $(FUZZ_RUN) -max_len=2048 $(FUZZ_DIR)/value-corpus

clean:
	rm -rf build

# SO (default: this build's module) defines exactly one dynamic symbol of
# ours: luaopen_hurrahdb, a function. The only others accepted are these
# names, which some linkers add to every shared object (Debian 12's adds
# none). Anything else fails. Run by `make test` on the modules it built
# (this build's and the nginx specs' LuaJIT one) and by .ci/run on the
# modules the rocks installed.
SO ?= $(MODULE)
LINKER_SYMBOLS := _init _fini __bss_start _edata _end
check-exports:
	@syms=$$(nm -D --defined-only "$(SO)") || { echo "$(SO): nm failed"; exit 1; }; \
	printf '%s\n' "$$syms" | awk -v so="$(SO)" -v linker="$(LINKER_SYMBOLS)" ' \
		BEGIN { n = split(linker, l, " "); for (i = 1; i <= n; i++) ok[l[i]] = 1 } \
		NF == 3 && $$3 == "luaopen_hurrahdb" && $$2 == "T" { found++; next } \
		NF == 3 && ($$3 in ok) { next } \
		NF > 0 { print so ": unexpected export: " $$0; bad = 1 } \
		END { if (found != 1) { print so ": luaopen_hurrahdb is not exported"; bad = 1 } exit bad }'

# ---- the rock ----------------------------------------------------------------
# rockspec/hurrahdb-scm-1.rockspec (build.type = "make") runs `make rock`,
# then `make rock-install`, with luarocks' CC, CFLAGS, LIBFLAG and LUA_INCDIR,
# then INST_LIBDIR and INST_LUADIR. No package is installed, no warning is
# fatal (another compiler may warn where this one does not), and the build
# starts afresh in build/rock: the same checkout may be built for several
# Luas in turn, and objects made with one Lua's headers must not be reused
# for another's.
ROCK_DIR := build/rock
ROCK_MODULE := $(ROCK_DIR)/hurrahdb.so
ROCK_ENGINE_OBJ := $(ENGINE_SRC:src/%.c=$(ROCK_DIR)/%.o)
ROCK_BINDING_OBJ := $(BINDING_SRC:src/%.c=$(ROCK_DIR)/%.o)
ROCK_CFLAGS := $(MODULE_CFLAGS) -Wall -Wextra $(CFLAGS)
LIBFLAG ?= -shared
LUA_INCDIR ?= $(LUA_INC)

rock:
	@rm -rf $(ROCK_DIR)
	@$(MAKE) --no-print-directory $(ROCK_MODULE)

$(ROCK_ENGINE_OBJ): $(ROCK_DIR)/%.o: src/%.c $(HEADERS)
	@mkdir -p $(ROCK_DIR)
	$(CC) $(ROCK_CFLAGS) -c $< -o $@

$(ROCK_BINDING_OBJ): $(ROCK_DIR)/%.o: src/%.c $(HEADERS)
	@mkdir -p $(ROCK_DIR)
	$(CC) $(ROCK_CFLAGS) -I"$(LUA_INCDIR)" -c $< -o $@

$(ROCK_MODULE): $(ROCK_ENGINE_OBJ) $(ROCK_BINDING_OBJ)
	$(CC) $(LIBFLAG) $(MODULE_LDFLAGS) $(LDFLAGS) -o $@ $^

rock-install: $(ROCK_MODULE)
	@[ -n "$(INST_LIBDIR)" ] && [ -n "$(INST_LUADIR)" ] || \
		{ echo "rock-install needs INST_LIBDIR and INST_LUADIR (luarocks passes them)"; exit 1; }
	mkdir -p "$(INST_LIBDIR)" "$(INST_LUADIR)/hurrahdb"
	cp $(ROCK_MODULE) "$(INST_LIBDIR)/hurrahdb.so"
	cp lua/hurrahdb/worker.lua "$(INST_LUADIR)/hurrahdb/worker.lua"
	cp lua/hurrahdb/cli.lua "$(INST_LUADIR)/hurrahdb/cli.lua"

# ---- set-up ----------------------------------------------------------------
# deps PKGS="a b": installs the Debian packages among PKGS that are missing.
.PHONY: deps
deps:
	@if ! command -v dpkg-query >/dev/null 2>&1; then \
		echo "no dpkg here: not checking for the Debian packages $(PKGS)"; \
		echo "(install their equivalents yourself; the build fails naming what it cannot find)"; \
		exit 0; \
	fi; \
	missing=""; for p in $(PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; \
		elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; \
		else echo "hurrahdb needs these Debian packages:$$missing"; \
		     echo "install them with: sudo apt-get install -y$$missing"; exit 1; fi; \
		echo "installing:$$missing"; \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q$$missing >/dev/null || \
		{ echo "apt-get failed; run: sudo apt-get install -y$$missing"; exit 1; }; \
	fi

deps-build:
	@$(MAKE) --no-print-directory deps PKGS="make gcc libc6-dev $(LUA_PKGS)"

deps-test:
	@$(MAKE) --no-print-directory deps PKGS="lua-busted lua-cjson lua-socket lua-argparse redis-server \
		nginx libnginx-mod-http-lua lua-resty-core luajit2 libluajit2-5.1-dev locales $(LUA_PKGS)"

deps-check:
	@$(MAKE) --no-print-directory deps PKGS="lua-busted lua-cjson lua-socket lua-argparse redis-server locales $(LUA_PKGS)"

deps-fuzz:
	@$(MAKE) --no-print-directory deps PKGS="clang libclang-rt-14-dev liblua5.4-dev"

deps-bench:
	@$(MAKE) --no-print-directory deps PKGS="lua-cjson lua-socket redis-server redis-tools lua-redis \
		lua-sql-sqlite3 gnuplot-nox nginx libnginx-mod-http-lua lua-resty-core wrk valgrind \
		luajit2 libluajit2-5.1-dev $(LUA_PKGS)"
