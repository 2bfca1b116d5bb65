#!/usr/bin/env bash
# Builds a fully static meshinit (static-pie, glibc linked in) for init-container images and
# CNI bin directories that have no matching libc: target/x86_64-unknown-linux-gnu/release/meshinit.
# `--target` keeps crt-static away from build scripts and proc-macros, which must stay dynamic.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" cargo build --release --target "$target"
ls -l "target/$target/release/meshinit"
