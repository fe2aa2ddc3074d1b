#!/usr/bin/env bash
# The browser page (web/): builds the crate for wasm32 with wgpu's WebGPU backend, generates
# the JavaScript glue with wasm-bindgen into web/pkg/, and serves web/ on 127.0.0.1 (WebGPU
# needs a secure context, which localhost is).
#   scripts/web.sh            build, then serve on http://127.0.0.1:8080 (PORT=… to change)
#   scripts/web.sh build      build only
# Needs: rustup target add wasm32-unknown-unknown; cargo install wasm-bindgen-cli --version
# (the wasm-bindgen version in Cargo.lock); python3 to serve. scripts/setup.sh --web installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$HOME/.cargo/bin:$PATH"
cargo rustc --release --lib --target wasm32-unknown-unknown --crate-type cdylib
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
    target/wasm32-unknown-unknown/release/activegen.wasm
echo "web: built web/pkg ($(du -h web/pkg/activegen_bg.wasm | cut -f1) of wasm)" >&2
[ "${1:-}" = build ] && exit 0
port=${PORT:-8080}
echo "web: open http://127.0.0.1:$port/ in a browser with WebGPU (Chrome, Edge; Firefox 141+)" >&2
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory web
