# Sourced by the scripts: one toolchain for both halves of the build.
# Debian's cargo/rustc (1.96, with the std source for -Zbuild-std) comes
# first; npm's wasm-opt shadows any other; cargo-installed tools after.
ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
export PATH="$ROOT/end2end/node_modules/.bin:/usr/bin:$CARGO_HOME/bin:$PATH"
export RUSTC_BOOTSTRAP=1
export LEPTOS_OUTPUT_NAME=bindery
