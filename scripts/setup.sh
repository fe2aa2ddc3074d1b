#!/usr/bin/env bash
# Installs what activegen needs on a fresh Debian/Ubuntu machine, as root (no sudo there)
# or as a user with sudo; installs only what is missing, so it is safe to rerun.
#   scripts/setup.sh           the Vulkan driver (lavapipe runs compute on the CPU) and Rust
#   scripts/setup.sh --tests   also what the tests need: Fashion-MNIST, Chromium with
#                              chromedriver, and the browser build (below)
#   scripts/setup.sh --web     the browser build only: the wasm32 target and wasm-bindgen-cli
set -euo pipefail
tests=0
web=0
[ "${1:-}" = "--tests" ] && tests=1 && web=1
[ "${1:-}" = "--web" ] && web=1

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    as_root=(sudo)
fi

need=()
# The Vulkan loader and a driver; lavapipe (mesa-vulkan-drivers) is the CPU fallback.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1' || ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
    need+=(mesa-vulkan-drivers libvulkan1)
fi
command -v cargo >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/cargo" ] || need+=(curl ca-certificates build-essential)
if [ $tests -eq 1 ]; then
    [ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
    # The report and the web page are checked in a real browser (tests/report_browser.rs,
    # tests/browser.rs, which drives it through chromedriver).
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi
if [ ${#need[@]} -gt 0 ]; then
    if [ ${#as_root[@]} -gt 0 ] && ! command -v sudo >/dev/null 2>&1; then
        echo "setup: not root and no sudo: as root, run apt-get install ${need[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${need[*]}" >&2
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${need[@]}"
fi

# Rust: the toolchain from rustup where the machine has none.
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    echo "setup: installing Rust with rustup" >&2
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi

# The browser build (scripts/web.sh): the wasm32 target, and wasm-bindgen-cli at the version
# of the wasm-bindgen crate in Cargo.lock (the two must match).
if [ $web -eq 1 ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
        echo "setup: adding the wasm32-unknown-unknown target" >&2
        rustup target add wasm32-unknown-unknown
    fi
    lock="$(dirname "$0")/../Cargo.lock"
    want=$(grep -A1 '^name = "wasm-bindgen"$' "$lock" | sed -n 's/^version = "\(.*\)"$/\1/p')
    have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')
    if [ -n "$want" ] && [ "$have" != "$want" ]; then
        echo "setup: installing wasm-bindgen-cli $want (about 3 minutes)" >&2
        cargo install -q wasm-bindgen-cli --version "$want"
    fi
fi
