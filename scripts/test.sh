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
# The podman tests (tests/podman_deploy.rs) and scripts/build-image.sh.
for tool in podman runc catatonit; do
  command -v "$tool" >/dev/null || need_packages+=("$tool")
done
dpkg -s busybox-static >/dev/null 2>&1 || need_packages+=(busybox-static)
if [ ${#need_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: needs ${need_packages[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

# The containerd CRI tests (tests/cni_containerd.rs): Debian's containerd and its ctr,
# without the recommended extras (the test gives it its own config, socket and state).
if ! command -v containerd >/dev/null && [ "$(id -u)" -eq 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd >/dev/null; }
fi

# YAML validators for tests/deploy_files.rs, from PyPI (Kubernetes schemas bundled: no
# cluster needed), and gRPC for the CRI client of tests/cni_containerd.rs
# (tests/cri/cri_client.py), in a virtual environment under target/.
pytools=target/pytools
if [ ! -x "$pytools/bin/kubernetes-validate" ] || [ ! -x "$pytools/bin/yamllint" ] \
  || ! "$pytools/bin/python3" -c 'import grpc, grpc_tools' 2>/dev/null; then
  if ! python3 -m venv "$pytools" 2>/dev/null; then
    [ "$(id -u)" -eq 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$pytools"
  fi
  "$pytools/bin/pip" install -q kubernetes-validate==1.37.0 yamllint==1.38.0 \
    grpcio==1.76.0 grpcio-tools==1.76.0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: not root: the namespace tests will be skipped (CI runs them as root)" >&2
fi

cargo fmt --all -- --check
cargo clippy --all-targets --workspace --quiet -- -D warnings
# The static binary the FROM scratch image test runs (tests/podman_deploy.rs); built here,
# not inside a test, where cargo's build lock is held.
scripts/build-static.sh >/dev/null
cargo test --workspace "$@"
