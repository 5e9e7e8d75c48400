# tests/vm/vmtest.mk -- run the real static memleak under other kernels (QEMU).
# Included from the Makefile; standalone:
#   make -f Makefile -f tests/vm/vmtest.mk vmtest
#
# Each run boots a Debian kernel with ../shared/vmtest/run-in-vm.sh (busybox
# initramfs), copies in the static memleak, a static leaker (built here from
# tests/fixtures/leaker.c) and tests/vm/run-tests.sh, and runs the latter:
# exact leak_* totals of `memleak -c ./leaker`, its exit status, and a kernel
# mode checks (the raw tracepoint path, and its recursion misses against
# --fallback tracepoints'). Run names are KERNEL[+nobtf][+bare] (cache names of
# fetch-kernels.sh); +nobtf hides /sys/kernel/btf, +bare mounts no tracefs.
#
#   make vmtest                     all of VMTEST_RUNS (stops at the first failure;
#                                   make -k vmtest runs them all)
#   make vmtest-aarch64-bookworm    one run (any KERNEL[+nobtf][+bare] of VMTEST_RUNS)
#   make vmtest VMTEST_RUNS=x86_64-trixie   another kernel (fetched on demand)
#   make vmtest VMTEST_DEPS_x86_64= VMTEST_DEPS_aarch64=   use the binaries as built
#
# Needs what `make deps-vm` installs (tests/deps.sh, group vm).

VMTEST ?= ../shared/vmtest
# Runs: KERNEL[+nobtf][+bare]
VMTEST_RUNS ?= x86_64-bookworm x86_64-bullseye x86_64-bookworm+nobtf x86_64-bookworm+bare aarch64-bookworm \
	x86_64-trixie aarch64-trixie x86_64-bullseye+nobtf x86_64-trixie+nobtf
# Seconds per VM (boot + both memleak runs); guests are TCG-emulated in CI.
VMTEST_TIMEOUT ?= 600
# Per memleak run inside the guest (run-tests.sh RUN_TIMEOUT).
VMTEST_RUN_TIMEOUT ?= 240
# Guest vCPUs per arch. x86_64 guests get one: with two, the TCG-emulated
# 6.12 guest now and then (once in three runs of x86_64-trixie+nobtf, and in
# CI) died of "Oops: int3" at a tracepoint site in free_unref_folios, while
# the kernel-mode check attached and detached the kmem tracepoints. x86
# turns a tracepoint on by patching its 5-byte nop through a temporary int3
# (text_poke_bp) and relies on the other CPU seeing each step in order;
# QEMU's multi-threaded TCG evidently let a vCPU run the stale int3. BPF
# cannot write kernel text, so no memleak bug can cause this; one vCPU
# has no other CPU to race (10 of 10 runs passed). aarch64 patches one
# instruction at a time and keeps two.
VMTEST_CPUS_x86_64 ?= 1
VMTEST_CPUS_aarch64 ?= 2
# `cat /proc/self/status` runs of the recursion-miss check (run-tests.sh).
VMTEST_STATUS_LOOPS ?= 3000
VMTEST_OUT ?= $(or $(TARGET_DIR),$(CARGO_TARGET_DIR),target)/vm
VMTEST_CC_x86_64 ?= gcc
VMTEST_CC_aarch64 ?= aarch64-linux-gnu-gcc
VMTEST_LEAKER_CFLAGS ?= -static -O0 -g -fno-omit-frame-pointer -Wall -Werror
# The binaries under test and the targets that build them (empty: use as is).
VMTEST_MEMLEAK_x86_64 ?= $(or $(STATIC_X86_64),target/x86_64-unknown-linux-musl/release/memleak)
VMTEST_MEMLEAK_aarch64 ?= $(or $(STATIC_AARCH64),target/aarch64-unknown-linux-musl/release/memleak)
VMTEST_DEPS_x86_64 ?= static
VMTEST_DEPS_aarch64 ?= aarch64

# This directory (tests/vm), wherever make runs from.
VMTEST_HERE := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
VMTEST_FIXTURE := $(patsubst %/vm,%,$(VMTEST_HERE))/fixtures/leaker.c
VMTEST_LEAKS := $(patsubst %/vm,%,$(VMTEST_HERE))/fixtures/leaker.leaks
VMTEST_DEEP := $(patsubst %/vm,%,$(VMTEST_HERE))/fixtures/deep.c
# deep.c as the DWARF check wants it: no frame pointers, optimised.
VMTEST_DEEP_CFLAGS ?= -static -O2 -g -fomit-frame-pointer -Wall -Werror

# run name -> kernel (x86_64-bookworm), arch (x86_64), fetch spec (x86_64:bookworm)
vmtest-kernel = $(firstword $(subst +, ,$(1)))
vmtest-arch = $(firstword $(subst -, ,$(call vmtest-kernel,$(1))))
vmtest-spec = $(call vmtest-arch,$(1)):$(patsubst $(call vmtest-arch,$(1))-%,%,$(call vmtest-kernel,$(1)))
vmtest-flags = $(if $(findstring +nobtf,$(1)),--no-btf) $(if $(findstring +bare,$(1)),--bare)
VMTEST_SPECS = $(sort $(foreach r,$(VMTEST_RUNS),$(call vmtest-spec,$(r))))

.PHONY: vmtest vmtest-kernels vmtest-leakers $(addprefix vmtest-,$(VMTEST_RUNS))

## vmtest: static memleak under Debian kernels in QEMU (x86_64 5.10/6.1, aarch64 6.1), exact leak totals
vmtest: $(addprefix vmtest-,$(VMTEST_RUNS))
	@echo "vmtest: all passed: $(VMTEST_RUNS)"

## vmtest-kernels: download the vmtest kernels (cached in ~/.cache/vmtest)
vmtest-kernels: deps-vm
	bash $(VMTEST)/fetch-kernels.sh $(VMTEST_SPECS) >/dev/null

## vmtest-leakers: static leaker fixtures for the guests (target/vm/leaker-ARCH)
vmtest-leakers: $(VMTEST_OUT)/leaker-x86_64 $(VMTEST_OUT)/leaker-aarch64 $(VMTEST_OUT)/deep-x86_64 $(VMTEST_OUT)/deep-aarch64

# The guest has no libc: the leaker must be static (glibc's malloc family,
# with the totals leaker.c documents).
$(VMTEST_OUT)/leaker-%: $(VMTEST_FIXTURE) | deps-vm
	@mkdir -p $(@D)
	$(VMTEST_CC_$*) $(VMTEST_LEAKER_CFLAGS) -o $@ $<
	@if readelf -lW $@ | grep -qw INTERP; then echo "error: $@ is not static" >&2; rm -f $@; exit 1; fi

$(VMTEST_OUT)/deep-%: $(VMTEST_DEEP) | deps-vm
	@mkdir -p $(@D)
	$(VMTEST_CC_$*) $(VMTEST_DEEP_CFLAGS) -o $@ $<
	@if readelf -lW $@ | grep -qw INTERP; then echo "error: $@ is not static" >&2; rm -f $@; exit 1; fi

# vmtest-RUN: one VM
define vmtest-run
vmtest-$(1): $(VMTEST_DEPS_$(call vmtest-arch,$(1))) $(VMTEST_OUT)/leaker-$(call vmtest-arch,$(1)) $(VMTEST_OUT)/deep-$(call vmtest-arch,$(1)) vmtest-kernels
	@echo "==== vmtest $(1): $(VMTEST_MEMLEAK_$(call vmtest-arch,$(1))) under $(call vmtest-kernel,$(1)) $(call vmtest-flags,$(1))"
	@start=$$$$(date +%s); \
	bash $(VMTEST)/run-in-vm.sh -k $(call vmtest-kernel,$(1)) $(call vmtest-flags,$(1)) -t $(VMTEST_TIMEOUT) \
	  -s $(VMTEST_CPUS_$(call vmtest-arch,$(1))) \
	  -e RUN_TIMEOUT=$(VMTEST_RUN_TIMEOUT) -e STATUS_LOOPS=$(VMTEST_STATUS_LOOPS) \
	  -f $(VMTEST_MEMLEAK_$(call vmtest-arch,$(1))):/vmtest/memleak \
	  -f $(VMTEST_OUT)/leaker-$(call vmtest-arch,$(1)):/vmtest/leaker \
	  -f $(VMTEST_OUT)/deep-$(call vmtest-arch,$(1)):/vmtest/deep \
	  -f $(VMTEST_HERE)/run-tests.sh:/vmtest/run-tests.sh \
	  -f $(VMTEST_LEAKS):/vmtest/leaker.leaks \
	  -f $(VMTEST_DEEP):/vmtest/deep.c \
	  -- 'sh run-tests.sh'; \
	rc=$$$$?; secs=$$$$(( $$$$(date +%s) - start )); \
	if [ $$$$rc = 0 ]; then echo "==== vmtest $(1): PASSED in $$$$secs s"; \
	else echo "==== vmtest $(1): FAILED (exit $$$$rc; 124 timeout, 125 VM failed) after $$$$secs s"; exit 1; fi
endef
$(foreach r,$(VMTEST_RUNS),$(eval $(call vmtest-run,$(r))))
