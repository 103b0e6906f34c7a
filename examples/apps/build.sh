#!/usr/bin/env bash
# Rebuilds the example WASI 0.2 components (hello, kv, cpu) from source and
# prints their BLAKE3 (the hash peergrid deploys by) and sha256.
#
#   examples/apps/build.sh            # all three
#   examples/apps/build.sh kv cpu     # some of them
#
# Route (see README.md for why): the rustup `wasm32-wasip2` target cannot be
# downloaded offline, so we use Debian's own Rust 1.96 (`rustc-web`, bookworm
# security updates), rebuild the standard library for `wasm32-unknown-unknown`
# from Debian's library sources (`rust-web-src`, `-Zbuild-std`), and link with
# `wasm-component-ld` (shipped in `rustc-web`), which runs `wasm-ld` and then
# turns the core module into a component from the `component-type` sections
# that wit-bindgen (inside the `wasip2` crate) embeds. No WASI libc is needed:
# on wasm32-unknown-unknown std imports nothing, so the component imports only
# the WASI interfaces the app calls through `wasip2`.
#
# Idempotent: installs only what is missing; cargo rebuilds only what changed.
set -euo pipefail

APPS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$APPS"
if [ $# -gt 0 ]; then NAMES=("$@"); else NAMES=(hello kv cpu); fi

# 1. Toolchain packages from Debian (bookworm + bookworm-security):
#    rustc-web   rustc 1.96 (+ wasm-component-ld, libstd for the host)
#    cargo-web   cargo 1.96
#    rust-web-src  the standard library's sources, for -Zbuild-std
#    lld-22      wasm-ld-22 (the LLVM 22 linker rustc-web is built against)
#    b3sum       BLAKE3 of the outputs
PKGS=(rustc-web cargo-web rust-web-src lld-22 b3sum)
MISSING=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || MISSING+=("$p")
done
if [ ${#MISSING[@]} -gt 0 ]; then
  echo ">> apt-get install ${MISSING[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${MISSING[@]}"
fi

# 2. Use Debian's toolchain by absolute path: rustup's proxies (~/.cargo/bin)
#    usually come first on PATH and would pick rustup's rustc, which has
#    neither the wasm std nor the library sources. RUSTC_BOOTSTRAP=1 unlocks
#    -Zbuild-std on this stable compiler.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
CARGO=/usr/bin/cargo
SYSROOT="$($RUSTC --print sysroot)"
test -f "$SYSROOT/lib/rustlib/src/rust/library/Cargo.lock" \
  || { echo "library sources missing under $SYSROOT (rust-web-src)"; exit 1; }

# 3. The linker: wasm-component-ld from rustc-web (the same tool rustc uses for
#    wasm32-wasip2). Fallback: build it from crates.io.
WCLD="$SYSROOT/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld"
if [ ! -x "$WCLD" ]; then
  WCLD="$HOME/.cargo/bin/wasm-component-ld"
  [ -x "$WCLD" ] || $CARGO install --locked wasm-component-ld
fi
WASM_LD=/usr/bin/wasm-ld-22

# 4. Build. One target dir for all apps, so the rebuilt std is shared.
#    --remap-path-prefix keeps local paths (registry, checkout) out of the
#    binaries, so the hashes do not depend on where this runs.
export CARGO_TARGET_DIR="$APPS/target"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$WCLD"
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C link-arg=--wasm-ld-path=$WASM_LD \
 --remap-path-prefix=$CARGO_HOME_DIR/registry/src=/cargo \
 --remap-path-prefix=$APPS=/apps \
 --remap-path-prefix=$SYSROOT/lib/rustlib/src/rust=/rustc"

for app in "${NAMES[@]}"; do
  echo ">> building $app"
  (cd "$APPS/$app" && nice -n 10 "$CARGO" build --locked --release \
      --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort)
  out="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/$app.wasm"
  # A component starts with "\0asm" + version 0x0d 0x00 + layer 0x01 0x00
  # (a core module has version 1, layer 0).
  [ "$(od -An -tx1 -N8 "$out" | tr -d ' \n')" = "0061736d0d000100" ] \
    || { echo "$out is not a component"; exit 1; }
  cp "$out" "$APPS/$app/$app.wasm"
done

# 5. Hashes of the committed files.
echo
for app in "${NAMES[@]}"; do
  f="$app/$app.wasm"
  printf '%-15s %7d bytes  blake3 %s\n' "$f" "$(stat -c %s "$f")" "$(b3sum --no-names "$f")"
  printf '%-15s %7s        sha256 %s\n' "" "" "$(sha256sum "$f" | cut -d' ' -f1)"
done
