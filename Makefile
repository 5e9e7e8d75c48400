# memleak: build, test, demo and benchmarks. `make help` lists the targets.
CARGO ?= cargo
RELEASE := target/release/memleak
FIXTURES := target/fixtures

.PHONY: all release test demo bench clean help deps deps-build deps-vm dist fresh check check-as-user

# cargo install puts the test tools (inferno) here; sudo's PATH lacks it.
export PATH := $(HOME)/.cargo/bin:$(PATH)

all: release

## deps: install what building and testing need (Debian packages, inferno); skips what is there
deps:
	@tests/deps.sh build test

## deps-build: only what building needs (make demo runs this)
deps-build:
	@tests/deps.sh build

## deps-vm: what make vmtest needs (QEMU, the aarch64 cross compiler)
deps-vm:
	@tests/deps.sh vm

## release: optimised build for this machine (target/release/memleak)
release:
	$(CARGO) build --release
	@ls -l $(RELEASE) | awk '{print "built " $$NF ", " $$5 " bytes"}'

## test: installs what is missing (make deps), then unit, parser and end-to-end tests (real BPF; root),
##       with the unit tests marked ignored because they need root
test: deps
	$(CARGO) test -- --test-threads=2 --include-ignored

$(FIXTURES)/allocs: tests/fixtures/allocs.c
	@mkdir -p $(FIXTURES)
	gcc -O0 -g -fno-omit-frame-pointer -o $@ $<

## check: everything that needs no root: fmt, clippy, unit and parser tests, fuzz regressions (any user)
check: deps-build
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test --lib
	@$(MAKE) --no-print-directory fuzz-regressions

## check-as-user: make check as the unprivileged user nobody, on a copy of the tree (root)
check-as-user:
	tests/check/as-user.sh

## demo: installs what is missing (make deps-build), builds, traces a program leaking 16 bytes every 100 ms (root)
demo: deps-build
	@$(MAKE) --no-print-directory release $(FIXTURES)/allocs
	$(RELEASE) -c $(FIXTURES)/allocs 1

## fresh: make demo and make test in a fresh debootstrapped bookworm root (root; ~15 min)
fresh:
	@tests/deps.sh fresh
	tests/fresh/run.sh

## bench: overhead per malloc/free pair, report time, RSS and size (needs root)
bench: release
	tests/bench/run.sh

# ---- static builds (musl) for x86_64 and aarch64 ----------------------------
# The setup script lives in the shared/ checkout beside the repo; override if elsewhere.
# Run with bash: the CI copy of shared/ may lack mode bits.
STATIC_TOOLCHAIN_SETUP ?= ../shared/toolchain/setup-static-toolchains.sh
# --prebuilt-std: std compiled once per musl target, so builds need no -Zbuild-std.
STATIC_TOOLCHAIN_FLAGS ?= --prebuilt-std
# Drop-in cargo that knows the musl targets (written by the setup script).
STATIC_CARGO ?= /opt/static-toolchains/bin/static-cargo
STATIC_CARGO_FLAGS ?=
# The board binaries only, to fit the 1.5 MiB budget (measured on x86_64):
# no unwind tables (panic = "abort": nothing unwinds; -57 KB of .eh_frame)
# and a static, not static-pie, executable (-42 KB of load-time
# relocations; memleak's own addresses are then not randomised, which
# costs a tracing tool run by root little). Given as --config because the
# toolchain's env.sh sets the targets' RUSTFLAGS itself; cargo merges both.
static-target-rustflags = --config 'target.$(1).rustflags=["-Cforce-unwind-tables=no","-Crelocation-model=static"]'
BIN ?= memleak
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
READELF ?= readelf
# Only used to report the stripped size (release profile already has strip = true).
STRIP_x86_64 ?= x86_64-linux-gnu-strip
STRIP_aarch64 ?= aarch64-linux-gnu-strip
# Each static binary must fit 1.5 MiB: boards' flash and a serial console's
# transfer time are what it costs.
SIZE_BUDGET ?= 1572864
# e.g. NICE="nice -n 15" on a shared 2-core machine
NICE ?=

X86_64_MUSL := x86_64-unknown-linux-musl
AARCH64_MUSL := aarch64-unknown-linux-musl
STATIC_X86_64 := $(TARGET_DIR)/$(X86_64_MUSL)/release/$(BIN)
STATIC_AARCH64 := $(TARGET_DIR)/$(AARCH64_MUSL)/release/$(BIN)

.PHONY: toolchain static aarch64 static-aarch64 static-all test-static test-aarch64

# aarch64: Debian's gcc defaults to -moutline-atomics, so libbpf's __sync_* calls
# become __aarch64_ldadd4_sync etc., which live in libgcc.a; rustc links with
# -nodefaultlibs and compiler_builtins only has the _relax/_acq/_rel/_acq_rel
# variants, so the link fails ("undefined reference to __aarch64_ldadd4_sync").
# Inline LL/SC atomics work on every ARMv8. cc-rs passes CFLAGS_<target> to
# libbpf-sys (libbpf, libelf, zlib). Keep the value identical for every cargo
# run, see README (cross builds):
# libbpf-sys reuses its objects when only CFLAGS change.
AARCH64_MUSL_CFLAGS := $(strip $(filter-out -mno-outline-atomics,$(CFLAGS_aarch64_unknown_linux_musl)) -mno-outline-atomics)
aarch64 test-aarch64: export CFLAGS_aarch64_unknown_linux_musl = $(AARCH64_MUSL_CFLAGS)

## toolchain: install the musl toolchains for static builds (root; ~1 s once done)
toolchain:
	@test -f "$(STATIC_TOOLCHAIN_SETUP)" || { echo "error: STATIC_TOOLCHAIN_SETUP=$(STATIC_TOOLCHAIN_SETUP) not found (set it to setup-static-toolchains.sh)" >&2; exit 1; }
	bash $(STATIC_TOOLCHAIN_SETUP) $(STATIC_TOOLCHAIN_FLAGS)

# check-static,<file>,<readelf Machine substring>,<strip tool>
define check-static
	@f='$(1)'; \
	test -f "$$f" || { echo "error: $$f was not built" >&2; exit 1; }; \
	$(READELF) -hW "$$f" | grep -q 'Machine:.*$(2)' || { echo "error: $$f is not a $(2) binary:" >&2; $(READELF) -hW "$$f" | grep Machine >&2; exit 1; }; \
	if $(READELF) -lW "$$f" | grep -qw INTERP; then echo "error: $$f is NOT static: it has a PT_INTERP header:" >&2; $(READELF) -lW "$$f" | grep -A1 -w INTERP >&2; exit 1; fi; \
	if $(READELF) -dW "$$f" | grep -q '(NEEDED)'; then echo "error: $$f is NOT static: it needs shared libraries:" >&2; $(READELF) -dW "$$f" | grep '(NEEDED)' >&2; exit 1; fi; \
	tmp=$$(mktemp) && cp "$$f" "$$tmp" && { $(3) "$$tmp" 2>/dev/null || echo "note: $(3) failed, size below is unstripped" >&2; } && \
	echo "static OK: $$f ($(2)), no INTERP, no NEEDED; $$(stat -c %s "$$f") bytes, stripped $$(stat -c %s "$$tmp") bytes ($$(( ($$(stat -c %s "$$tmp") + 1023) / 1024 )) KiB)"; \
	rm -f "$$tmp"
endef

## static: fully static x86_64 binary, target/x86_64-unknown-linux-musl/release/memleak
static:
	@command -v $(firstword $(STATIC_CARGO)) >/dev/null || { echo "error: $(STATIC_CARGO) missing: run 'make toolchain' (as root)" >&2; exit 1; }
	$(NICE) $(STATIC_CARGO) build --release --target $(X86_64_MUSL) $(call static-target-rustflags,$(X86_64_MUSL)) $(STATIC_CARGO_FLAGS)
	$(call check-static,$(STATIC_X86_64),X86-64,$(STRIP_x86_64))

## aarch64: fully static aarch64 binary, target/aarch64-unknown-linux-musl/release/memleak
aarch64:
	@command -v $(firstword $(STATIC_CARGO)) >/dev/null || { echo "error: $(STATIC_CARGO) missing: run 'make toolchain' (as root)" >&2; exit 1; }
	$(NICE) $(STATIC_CARGO) build --release --target $(AARCH64_MUSL) $(call static-target-rustflags,$(AARCH64_MUSL)) $(STATIC_CARGO_FLAGS)
	$(call check-static,$(STATIC_AARCH64),AArch64,$(STRIP_aarch64))

static-aarch64: aarch64

# ---- release files for boards (dist/) -----------------------------------------
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DIST ?= dist

define DIST_README
memleak $(VERSION): which call stacks allocated memory that was never freed,
seen with eBPF. One static executable per architecture; nothing else to
install on the board.

  memleak-$(VERSION)-x86_64    x86_64, static (musl)
  memleak-$(VERSION)-aarch64   aarch64 (arm64), static (musl)
  SHA256SUMS                   check with: sha256sum -c SHA256SUMS

Copy the one for the board's architecture (uname -m) and run it as root:

  scp memleak-$(VERSION)-aarch64 root@board:/tmp/memleak
  ssh root@board /tmp/memleak --version
  ssh root@board /tmp/memleak -p $$(pidof mydaemon) -s 10 5 3

Over a serial console without a network, any file transfer works (a USB
stick, tftp, or base64 pasted into the console and decoded there).
`memleak --version` prints the version, the commit it was built from, the
architecture and "static": compare it with this file's name.

The board's kernel needs CONFIG_BPF_SYSCALL; for user programs also
CONFIG_UPROBES and CONFIG_UPROBE_EVENTS; for kernel mode (no -p or -c)
CONFIG_TRACEPOINTS. BTF, kprobes and kernel headers are not needed.
Run as root, or with CAP_BPF and CAP_PERFMON. `memleak -h` lists the flags.
endef
export DIST_README

## dist: both static binaries, SHA256SUMS and a text for the board in dist/ (root: make toolchain)
dist: toolchain static aarch64
	@rm -rf $(DIST) && mkdir -p $(DIST)
	cp $(STATIC_X86_64) $(DIST)/memleak-$(VERSION)-x86_64
	cp $(STATIC_AARCH64) $(DIST)/memleak-$(VERSION)-aarch64
	@printf '%s\n' "$$DIST_README" > $(DIST)/README.txt
	cd $(DIST) && sha256sum memleak-$(VERSION)-x86_64 memleak-$(VERSION)-aarch64 README.txt > SHA256SUMS
	@for f in $(DIST)/memleak-$(VERSION)-*; do \
	  size=$$(stat -c %s $$f); \
	  if [ $$size -gt $(SIZE_BUDGET) ]; then echo "error: $$f is $$size bytes, over the $(SIZE_BUDGET)-byte (1.5 MiB) budget" >&2; exit 1; fi; \
	  echo "$$f: $$size bytes (budget $(SIZE_BUDGET))"; done
	@cd $(DIST) && sha256sum -c --quiet SHA256SUMS && echo "$(DIST)/SHA256SUMS: OK"
## static-all: both static binaries
static-all: static aarch64

## test-static: the end-to-end tests again, on the static x86_64 binary
test-static: static
	MEMLEAK_BIN=$(CURDIR)/$(STATIC_X86_64) $(CARGO) test --test user_mode --test errors --test kernel_mode --test pprof --test dlclose -- --test-threads=2

## test-aarch64: unit and parser tests of the aarch64 build, under qemu-aarch64-static
# (the end-to-end tests load BPF, which qemu-user cannot: those run in vmtest)
test-aarch64:
	$(NICE) $(STATIC_CARGO) test --target $(AARCH64_MUSL) --lib $(STATIC_CARGO_FLAGS)

# ---- the static binaries under other kernels, in QEMU (tests/vm) ------------
include tests/vm/vmtest.mk

# ---- fuzzing the parsers (tests/fuzz) ----------------------------------------
include tests/fuzz/fuzz.mk

## clean: remove target/
clean:
	$(CARGO) clean

## help: this list
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)
