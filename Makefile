# memleak: build, test, demo and benchmarks. `make help` lists the targets.
CARGO ?= cargo
RELEASE := target/release/memleak
FIXTURES := target/fixtures

.PHONY: all release test demo bench clean help

all: release

## release: optimised build for this machine (target/release/memleak)
release:
	$(CARGO) build --release
	@ls -l $(RELEASE) | awk '{print "built " $$NF ", " $$5 " bytes"}'

## test: unit, parser and end-to-end tests (real BPF; needs root)
test:
	$(CARGO) test -- --test-threads=2

$(FIXTURES)/allocs: tests/fixtures/allocs.c
	@mkdir -p $(FIXTURES)
	gcc -O0 -g -fno-omit-frame-pointer -o $@ $<

## demo: trace a small program that leaks 16 bytes every 100 ms (needs root)
demo: release $(FIXTURES)/allocs
	$(RELEASE) -c $(FIXTURES)/allocs 1

## bench: overhead per malloc/free pair, report time, RSS and size (needs root)
bench: release
	tests/bench/run.sh

clean:
	$(CARGO) clean

## help: this list
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)
