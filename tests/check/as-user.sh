#!/usr/bin/env bash
# `make check-as-user` (root): proves that `make check` needs no root, by
# running it as an unprivileged user (nobody) on a copy of this tree.
#
# The user gets what a developer without root has: the tree (tracked and
# untracked files, no target/), this machine's Rust toolchain (read-only, by
# a bind mount in a private mount namespace, the way a user's ~/.rustup
# would be there), a copy of the crate registry (offline: no network
# needed), and the Debian packages `make deps-build` installed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
USER_ID=${CHECK_USER_ID:-65534}
GROUP_ID=${CHECK_GROUP_ID:-65534}

die() { echo "check-as-user: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root to switch users; as an ordinary user run: make check"
command -v setpriv >/dev/null || die "setpriv missing (util-linux)"
command -v unshare >/dev/null || die "unshare missing (util-linux)"

sysroot=$(rustc --print sysroot)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
# Every crate the user's offline build needs, fetched here (as root, online).
(cd "$ROOT" && cargo fetch --quiet && cargo fetch --quiet --manifest-path tests/fuzz/Cargo.toml)

WORK=$(mktemp -d /var/tmp/memleak-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"
mkdir "$WORK/src" "$WORK/home" "$WORK/rust"
# The tree as git sees it (tracked and untracked, not ignored), not target/.
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) |
	tar -xf - -C "$WORK/src"
mkdir -p "$WORK/home/.cargo"
cp -a "$cargo_home/registry" "$WORK/home/.cargo/"
chown -R "$USER_ID:$GROUP_ID" "$WORK/src" "$WORK/home"

echo "== make check as uid $USER_ID in $WORK/src"
unshare -m --propagation private bash -c '
	set -e
	mount --bind -o ro "$1" "$2/rust"
	cd "$2/src"
	exec setpriv --reuid="$3" --regid="$4" --clear-groups \
		env -i HOME="$2/home" CARGO_HOME="$2/home/.cargo" CARGO_NET_OFFLINE=true \
		PATH="$2/rust/bin:/usr/local/bin:/usr/bin:/bin" TERM=dumb \
		make check
' check-as-user "$sysroot" "$WORK" "$USER_ID" "$GROUP_ID"
echo "== make check passed as uid $USER_ID"
