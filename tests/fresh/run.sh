#!/usr/bin/env bash
# A new user's first minutes, replayed: a fresh Debian bookworm root
# (debootstrap --variant=minbase) with nothing but this machine's Rust
# toolchain and the project's files, where `make demo` must run to the
# demo's report and `make test` must pass with no other step. Proves that
# the README's two commands install everything they need (tests/deps.sh).
#
#   tests/fresh/run.sh            (root; `make fresh`)
#
# FRESH_MIRROR overrides the Debian archive (default: the host apt's);
# FRESH_KEEP=1 keeps the root for a look afterwards. The root lives under
# /var/tmp and is removed at the end, after every mount in it is gone.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
say() { printf '== fresh: %s (%s)\n' "$*" "$(date +%T)"; }

[ "$(id -u)" = 0 ] || { echo "tests/fresh/run.sh: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "tests/fresh/run.sh: debootstrap missing: tests/deps.sh fresh" >&2; exit 1; }

# The archive the host's apt uses (this workplace reaches only that one).
mirror=${FRESH_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
    | grep -v security | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' \
    | awk '{print $1}' | grep -m1 '/debian/\?$' || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

# The toolchain rustc reports (a rustup toolchain or /usr): copied in by a
# read-only bind mount, the way a user's ~/.rustup would be there.
sysroot=$(rustc --print sysroot)

root=$(mktemp -d /var/tmp/memleak-fresh.XXXXXX)
# It becomes /: mktemp's 0700 would keep every other user (the tests run
# some as nobody) out of the whole tree.
chmod 755 "$root"
mounted=()
cleanup() {
  local rc=$? m
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    m=${mounted[i]}
    umount -R "$m" 2>/dev/null || umount -R -l "$m" 2>/dev/null || true
  done
  if [ "${FRESH_KEEP:-0}" = 1 ]; then
    echo "fresh: kept $root" >&2
  elif grep -q " $root" /proc/mounts; then
    # Never delete through a mount that is still there (/dev, /sys).
    echo "fresh: $root still has mounts; not removing it" >&2
  else
    rm -rf --one-file-system "$root"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# make is the one thing a user needs before typing `make demo`: minbase
# lacks it, so it is the only package added here.
say "debootstrap --variant=minbase --include=make bookworm from $mirror"
debootstrap --variant=minbase --include=make bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 || {
  tail -20 "$root.debootstrap.log" >&2; exit 1; }
rm -f "$root.debootstrap.log"
# The machine's network, not the project's: its resolver, and the CA bundle
# that its HTTPS to the crate registry is trusted with (minbase has none).
cp /etc/resolv.conf "$root/etc/resolv.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
# The host's apt settings (a snapshot's Check-Valid-Until, proxies) apply to
# the same archive inside.
cp -a /etc/apt/apt.conf.d/. "$root/etc/apt/apt.conf.d/" 2>/dev/null || true

# The project as a clone has it, plus uncommitted edits of tracked files.
say "copying the project and the Rust toolchain in"
git clone --quiet "$top" "$root/root/memleak"
{ git -C "$top" diff --name-only -z --diff-filter=d HEAD; git -C "$top" ls-files -z --others --exclude-standard; } \
  | (cd "$top" && xargs -0r cp --parents -t "$root/root/memleak")

bind() { # SRC DEST [ro]
  mkdir -p "$2"
  mount --rbind "$1" "$2"
  mount --make-rslave "$2"
  mounted+=("$2")
  [ "${3:-}" = ro ] && mount -o remount,bind,ro "$2"
  return 0
}
# On a real machine / is a mount point (tests make private mount
# namespaces from it): the root, bound onto itself, private so that nothing
# mounted inside reaches the host.
mount --bind "$root" "$root"
mount --make-private "$root"
mounted+=("$root")
mkdir -p "$root/proc"
mount -t proc proc "$root/proc"
mounted+=("$root/proc")
bind /sys "$root/sys"
bind /dev "$root/dev"
bind "$sysroot" "$root/opt/rust"

run_in() {
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/opt/rust/bin:/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c "cd /root/memleak && $1"
}

say "make demo"
run_in "make demo" 2>&1 | tee "$root/demo.log" | sed 's/^/  | /'
grep -qE '^	[0-9]+ bytes in [0-9]+ allocations from stack$' "$root/demo.log" || {
  echo "fresh: make demo printed no report of main's 16-byte leaks" >&2; exit 1; }
grep -q 'main+0x[0-9a-f]* \[allocs\] allocs.c:' "$root/demo.log" || {
  echo "fresh: the demo's report does not name main in allocs.c" >&2; exit 1; }

say "make test"
if ! run_in "make test" 2>&1 | sed 's/^/  | /'; then
  echo "fresh: make test failed" >&2
  exit 1
fi
say "passed: make demo and make test on a fresh bookworm root"
