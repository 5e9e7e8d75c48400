# Fuzzing of the parsers (maps, ELF symbols, kallsyms). Included from the
# top-level Makefile; also works alone: `make -f tests/fuzz/fuzz.mk fuzz`.
# See tests/fuzz/README.md.

CARGO ?= cargo
# Directory of this fragment, relative to where make runs.
FUZZ_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
FUZZ_ROOT := $(FUZZ_DIR)/../..
FUZZ_TARGETS ?= proc_maps elf kallsyms
FUZZ_SECONDS ?= 60
FUZZ_TARGET_DIR ?= $(FUZZ_ROOT)/target/fuzz
# cargo-fuzz builds with -Zsanitizer=address; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept -Z flags. FUZZ_SANITIZER=none works without it.
FUZZ_SANITIZER ?= address

.PHONY: fuzz fuzz-regressions fuzz-tools

## fuzz: replay saved fuzz crashes, then fuzz each parser FUZZ_SECONDS (60) s; fails on a crash
fuzz: fuzz-tools fuzz-regressions
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_TARGET_DIR)/corpus/$$t $(FUZZ_DIR)/regressions/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  if ! RUSTC_BOOTSTRAP=1 nice -n 10 $(CARGO) fuzz run --fuzz-dir $(FUZZ_DIR) \
	      --target-dir $(FUZZ_TARGET_DIR)/run -s $(FUZZ_SANITIZER) $$t \
	      $(FUZZ_TARGET_DIR)/corpus/$$t $(FUZZ_DIR)/corpus/$$t -- \
	      -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	      -artifact_prefix=$(FUZZ_DIR)/regressions/$$t/ ; then \
	    echo "fuzz: $$t failed (crash, timeout, OOM or build error); a crashing input is saved in $(FUZZ_DIR)/regressions/$$t/" >&2; \
	    exit 1; \
	  fi; \
	done

## fuzz-regressions: replay tests/fuzz/regressions/* and the seed corpora (stable Rust only)
fuzz-regressions:
	cd $(FUZZ_DIR) && CARGO_TARGET_DIR=$(abspath $(FUZZ_TARGET_DIR))/test nice -n 10 $(CARGO) test

fuzz-tools:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
