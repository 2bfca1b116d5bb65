#!/usr/bin/env bash
# Runs every test of meshinit: unit, golden, validation, and the namespace/traffic tests
# (which need root). Installs what the tests need on a fresh Debian/Ubuntu machine.
# Usage: sudo scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v iptables-nft-restore >/dev/null || need_packages+=(iptables)
command -v ipset >/dev/null || need_packages+=(ipset)
command -v nft >/dev/null || need_packages+=(nftables)  # tests read nf_tables state with nft
command -v ip >/dev/null || need_packages+=(iproute2)
command -v setpriv >/dev/null || need_packages+=(util-linux)
command -v flock >/dev/null || need_packages+=(util-linux)
[ -x /usr/lib/cni/bridge ] || need_packages+=(containernetworking-plugins)
if [ ${#need_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: needs ${need_packages[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: not root: the namespace tests will be skipped (CI runs them as root)" >&2
fi

cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test "$@"
