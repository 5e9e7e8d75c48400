#!/usr/bin/env bash
# The one list of what building, testing and the VM tests need, and the one
# step that installs it (`make deps`, `make deps-build`, `make deps-vm`;
# .ci/run calls the same targets). Installed packages are detected with one
# dpkg-query and skipped, so a machine that has everything pays well under a
# second. Not root, or no apt: print what is missing and the command that
# installs it, and stop.
#
#   tests/deps.sh GROUP...      GROUP: build, test, vm
set -euo pipefail

# build: clang compiles bpf/*.bpf.c (llvm-strip trims its DWARF); gcc,
# make, pkg-config, the autotools, flex, bison, gawk and m4 build the
# libbpf, libelf and zlib that libbpf-sys vendors.
build=(clang-19 llvm-19 gcc libc6-dev make pkg-config autoconf automake autopoint
       flex bison gawk m4)
# test: g++, musl-gcc and Debian's jemalloc, tcmalloc and mimalloc build the
# fixtures of other allocators; binutils strips and splits debug files;
# setpriv (util-linux) runs the unprivileged-user test; python3 reads
# --json output; procps (ps) checks the process table; golang-go's
# `go tool pprof` reads --pprof files. inferno (cargo, below) draws
# --folded output. strace counts memleak's opens of each ELF file
# (tests/read_once.rs).
test=(g++ util-linux procps musl-tools libjemalloc-dev libtcmalloc-minimal4 strace
      libmimalloc-dev binutils python3 golang-go)
# vm: ../shared/vmtest boots other kernels in QEMU for `make vmtest`; the
# aarch64 cross gcc builds the aarch64 leakers.
vm=(qemu-system-x86 qemu-system-arm cpio zstd xz-utils gcc-aarch64-linux-gnu
    libc6-dev-arm64-cross)
# fresh: debootstrap builds the fresh bookworm root of tests/fresh/run.sh.
fresh=(debootstrap)

say() { printf 'deps: %s\n' "$*" >&2; }

[ $# -gt 0 ] || { say "usage: tests/deps.sh build|test|vm|fresh..."; exit 2; }
wanted=()
for group in "$@"; do
  case $group in
    build) wanted+=("${build[@]}") ;;
    test) wanted+=("${test[@]}") ;;
    vm) wanted+=("${vm[@]}") ;;
    fresh) wanted+=("${fresh[@]}") ;;
    *) say "unknown group '$group' (build, test, vm, fresh)"; exit 2 ;;
  esac
done

# Rust is not a Debian package here: bookworm's cargo is older than the
# 1.85 the crate needs.
if ! command -v cargo >/dev/null; then
  say "cargo not found: install Rust 1.85 or newer with rustup, then run this again."
  [ -n "${SUDO_USER:-}" ] && say "(sudo resets PATH: if $SUDO_USER has cargo, run: sudo env \"PATH=\$PATH\" make ...)"
  exit 1
fi

missing=()
if command -v dpkg-query >/dev/null; then
  # One query for all: 'name installed' for each package dpkg knows.
  declare -A have=()
  while read -r name status; do
    [ "$status" = installed ] && have[$name]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${wanted[@]}" 2>/dev/null || true)
  for p in "${wanted[@]}"; do [ -n "${have[$p]:-}" ] || missing+=("$p"); done
else
  say "no dpkg here: install your distribution's equivalents of these Debian packages if the build fails:"
  say "  ${wanted[*]}"
fi

if [ ${#missing[@]} -gt 0 ]; then
  install="apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "missing packages: ${missing[*]}"
    say "install them as root with: apt-get update && $install"
    exit 1
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086 # word splitting of the list is intended
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# inferno draws a flame graph from --folded output in the tests. cargo
# installs it into ~/.cargo/bin, which the Makefile puts on PATH.
case " $* " in
  *" test "*)
    if ! command -v inferno-flamegraph >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/inferno-flamegraph" ]; then
      say "cargo install inferno"
      cargo install --quiet inferno --locked
    fi ;;
esac
exit 0
