#!/usr/bin/env bash
# The part of the VM tests that runs inside the VM, as root: shared by scripts/vm-test.sh
# (qemu, Debian kernels, prebuilt test binaries) and the Vagrantfile (cargo in the VM), so
# the two never drift.
#
# Usage: scripts/vm/inner.sh [--case CASE] [--prebuilt "EXE..."]
#   --case suite          the project's whole test suite with CI=true (default)
#   --case ipv6-disabled  needs a kernel booted with ipv6.disable=1: apply (IPv6 auto) exits 0
#                         and programs IPv4 only; --ipv6 on exits 4 and changes nothing
#   --case no-legacy      needs the legacy x_tables modules unloadable (module_blacklist=...):
#                         --backend auto works through nf_tables; --backend legacy fails clearly
#   --case no-nft-compat  needs nft_compat unloadable: iptables-nft cannot use its matches;
#                         --backend nftables applies, verifies, reports in sync and cleans
#   --case no-nft-nat     needs nft_chain_nat unloadable: --backend nftables exits 4 naming
#                         what the kernel lacks, and leaves nothing behind
#   --prebuilt LIST       run these test executables (paths relative to the project) instead
#                         of `cargo test`; without it, installs scripts/vm/packages and uses cargo
# Exit: 0 passed, 1 failed, 77 not applicable, 2 usage.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
project=$PWD
export CI=true NO_COLOR=1

case_name=suite prebuilt=""
while [ $# -gt 0 ]; do
  case $1 in
    --case) case_name=${2:?--case needs a value}; shift 2 ;;
    --prebuilt) prebuilt=${2?--prebuilt needs a list}; shift 2 ;;
    *) echo "inner.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "inner.sh: run as root (the tests create namespaces)" >&2; exit 2; }

failures=0
pass() { echo "vm:   ok    $*"; }
fail() { echo "vm:   FAIL  $*"; failures=$((failures + 1)); }

install_packages() {
  local missing=()
  while read -r pkg; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done < <(grep -v '^\s*\(#\|$\)' scripts/vm/packages)
  [ ${#missing[@]} -eq 0 ] && return
  echo "vm: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
}

run_suite() {
  # As on a node that uses iptables-legacy: meshinit drops CAP_SYS_MODULE, so iptables-legacy
  # cannot load these itself, and the suite runs every test on the legacy backend too.
  modprobe -a ip_tables iptable_nat ip6_tables ip6table_nat 2>/dev/null || true
  if [ -z "$prebuilt" ]; then
    if cargo test --workspace; then pass "cargo test"; else fail "cargo test"; fi
    return
  fi
  local exe start status failed_output=""
  export CARGO_MANIFEST_DIR=$project
  for exe in $prebuilt; do
    case $(basename "$exe") in
      # Not about the kernel: they need podman and the Python manifest validators, which the
      # host's scripts/test.sh installs and runs; the VM has neither.
      podman_deploy-*|deploy_files-*)
        echo "vm: not run here (host-only: container runtime and manifest validators): $exe"
        continue ;;
      # They compare meshinit with the AWS plugins (../shared/peers on the host, not on the
      # VM's disks) and drive containerd, which the VM does not have.
      cni_aws_parity-*|cni_containerd-*)
        echo "vm: not run here (host-only: the AWS plugins, containerd): $exe"
        continue ;;
    esac
    start=$(date +%s)
    echo "vm: running $exe"
    "$project/$exe" 2>&1 | tee "$out/test.log"
    status=${PIPESTATUS[0]}
    if [ $status -eq 0 ]; then
      pass "$(basename "$exe") ($(( $(date +%s) - start ))s)"
    else
      fail "$(basename "$exe") exited $status ($(( $(date +%s) - start ))s)"
      # What CI shows is the log's tail: the failures' own words, not only the binary's name.
      failed_output+=$'\n'"vm: --- $(basename "$exe") ---"$'\n'
      failed_output+=$(sed -n '/^failures:$/,$p' "$out/test.log" | grep -v '^\s*$' | head -80 | sed 's/^/vm:   /')
    fi
  done
  [ -z "$failed_output" ] || echo "vm: what the failed tests said:$failed_output"
}

# --- helpers for the kernel cases: a namespace pair, meshinit run inside the app side ---
if [ -z "$prebuilt" ]; then
  install_packages || { echo "inner.sh: cannot install scripts/vm/packages" >&2; exit 1; }
  cargo build --quiet || exit 1
fi
meshinit=$project/target/debug/meshinit
config=$project/tests/configs/traffic-ecs.json
app=vmcase-app peer=vmcase-peer
out=$(mktemp -d)
cleanup() { ip netns del "$app" 2>/dev/null; ip netns del "$peer" 2>/dev/null; rm -rf "$out"; }
trap cleanup EXIT

fresh_namespaces() { # app reaches 192.0.2.0/24 and the rest through the peer (IPv4 only)
  cleanup; mkdir -p "$out"
  ip netns add "$app" && ip netns add "$peer" &&
    ip -n "$app" link set lo up && ip -n "$peer" link set lo up &&
    ip -n "$app" link add eth0 type veth peer name peer0 netns "$peer" &&
    ip -n "$app" addr add 198.51.100.1/24 dev eth0 && ip -n "$app" link set eth0 up &&
    ip -n "$peer" addr add 198.51.100.2/24 dev peer0 && ip -n "$peer" link set peer0 up &&
    ip -n "$app" route add default via 198.51.100.2
}

# meshinit NAME ARGS...: runs meshinit in the app namespace; stdout/stderr/exit in $out/NAME.*
meshinit() {
  local name=$1; shift
  ip netns exec "$app" "$meshinit" "$@" >"$out/$name.out" 2>"$out/$name.err"
  echo $? >"$out/$name.code"
}

# expect NAME CODE TEXT WHAT: exit code and a text on stderr of an earlier `meshinit NAME`
expect() {
  local name=$1 code=$2 text=$3 what=$4 got
  got=$(cat "$out/$name.code")
  if [ "$got" = "$code" ] && { [ -z "$text" ] || grep -qF -- "$text" "$out/$name.err"; }; then
    pass "$what (exit $got)"
  else
    fail "$what: expected exit $code${text:+ and \"$text\" on stderr}, got exit $got"
    sed 's/^/vm:         stderr: /' "$out/$name.err" | tail -20
    sed 's/^/vm:         stdout: /' "$out/$name.out" | tail -20
  fi
}

nat_rules() { ip netns exec "$app" "iptables-$1-save" -t nat 2>&1 | grep -v '^#'; }
# The native backend's table (what `auto` chooses in a fresh namespace), read with nft.
native_table() { ip netns exec "$app" nft list table inet meshinit 2>/dev/null; }
# Everything of ours in nf_tables: iptables-nft's APPMESH lines and the native table.
ours() { nat_rules nft | grep APPMESH; native_table; }

case_ipv6_disabled() {
  if [ -e /proc/sys/net/ipv6 ]; then
    fail "precondition: this kernel has IPv6; boot it with ipv6.disable=1"; return
  fi
  pass "precondition: the kernel has no IPv6 (/proc/sys/net/ipv6 absent)"
  fresh_namespaces || { fail "setting up the namespaces"; return; }
  meshinit auto apply --verify "$config"
  expect auto 0 "programming IPv4 only" "apply --verify with IPv6 auto programs and proves IPv4 only"
  if native_table | grep 'redirect to :15001' >/dev/null; then pass "IPv4 rules installed (native table)"; else
    fail "IPv4 rules missing after apply:"; ours | sed 's/^/vm:         /'
  fi
  meshinit status status "$config"
  expect status 0 "" "status agrees with the config"
  local before; before=$(ours)
  meshinit on apply "$config" --ipv6 on
  expect on 4 "IPv6 is required" "apply --ipv6 on exits 4 naming the missing IPv6"
  if [ "$before" = "$(ours)" ]; then pass "the failed apply changed nothing"; else
    fail "the failed apply --ipv6 on changed the IPv4 rules"
  fi
  meshinit clean clean
  expect clean 0 "" "clean"
  if [ -n "$(ours)" ]; then fail "clean left rules of ours"; else pass "clean removed everything"; fi
}

case_no_legacy() {
  fresh_namespaces || { fail "setting up the namespaces"; return; }
  if ip netns exec "$app" iptables-legacy -t nat -S >/dev/null 2>&1; then
    fail "precondition: iptables-legacy works; boot with the legacy table modules blacklisted"; return
  fi
  pass "precondition: iptables-legacy cannot reach the nat table (modules not loadable)"
  meshinit legacy apply "$config" --backend legacy
  expect legacy 4 "iptables-legacy cannot be used here" "apply --backend legacy exits 4 naming the unusable legacy backend"
  grep '^meshinit:' "$out/legacy.err" | sed 's/^/vm:         /' 
  if [ -n "$(ours)" ]; then fail "the failed legacy apply left nf_tables rules"; else
    pass "the failed legacy apply installed nothing"
  fi
  meshinit auto apply --verify "$config" --backend auto
  expect auto 0 "backend=nftables" "apply --verify --backend auto works through nf_tables (native)"
  if native_table | grep 'redirect to :15001' >/dev/null; then pass "rules installed in table inet meshinit"; else
    fail "no table inet meshinit after apply"
  fi
  meshinit nft apply --verify "$config" --backend iptables-nft
  expect nft 0 "" "apply --verify --backend iptables-nft works too (moving from native)"
  if nat_rules nft | grep -- '-j APPMESH_EGRESS' >/dev/null && [ -z "$(native_table)" ]; then
    pass "rules moved to iptables-nft"; else fail "no APPMESH rules in iptables-nft-save, or the native table stayed"
  fi
  meshinit status status "$config"
  expect status 0 "" "status agrees with the config"
  meshinit clean clean
  expect clean 0 "" "clean"
  if [ -n "$(ours)" ]; then fail "clean left rules of ours"; else pass "clean removed everything"; fi
}

case_no_nft_compat() {
  fresh_namespaces || { fail "setting up the namespaces"; return; }
  if ip netns exec "$app" iptables-nft -t nat -A OUTPUT -m owner --uid-owner 1 -j RETURN 2>/dev/null; then
    fail "precondition: iptables-nft's owner match works; boot with nft_compat blacklisted"; return
  fi
  pass "precondition: iptables-nft cannot use its x_tables matches (nft_compat not loadable)"
  meshinit native apply --verify "$config" --backend nftables
  expect native 0 "" "apply --verify --backend nftables works without nft_compat"
  if native_table | grep 'redirect to :' >/dev/null; then pass "table inet meshinit holds the redirect"; else
    fail "no table inet meshinit after apply"
  fi
  meshinit status status "$config" --backend nftables
  expect status 0 "" "status agrees with the config"
  meshinit clean clean
  expect clean 0 "" "clean"
  if native_table | grep meshinit >/dev/null; then fail "clean left the table"; else pass "clean removed the table"; fi
}

case_no_nft_nat() {
  fresh_namespaces || { fail "setting up the namespaces"; return; }
  if printf 'table ip probe { chain c { type nat hook output priority 0; } }\n' | ip netns exec "$app" nft -f - 2>/dev/null; then
    fail "precondition: nf_tables nat chains work; boot with nft_chain_nat blacklisted"; return
  fi
  pass "precondition: the kernel has no nf_tables nat chains (nft_chain_nat not loadable)"
  meshinit native apply "$config" --backend nftables
  expect native 4 "nftables cannot be used here" "apply --backend nftables exits 4 naming the backend"
  grep '^meshinit:' "$out/native.err" | sed 's/^/vm:         /'
  if native_table | grep meshinit >/dev/null; then fail "the refused apply left a table"; else
    pass "the refused apply left nothing"
  fi
}

echo "vm: case $case_name on kernel $(uname -r)"
case $case_name in
  suite) run_suite ;;
  ipv6-disabled) case_ipv6_disabled ;;
  no-legacy) case_no_legacy ;;
  no-nft-compat) case_no_nft_compat ;;
  no-nft-nat) case_no_nft_nat ;;
  *) echo "inner.sh: unknown case $case_name (suite, ipv6-disabled, no-legacy, no-nft-compat, no-nft-nat)" >&2; exit 2 ;;
esac

if [ $failures -eq 0 ]; then echo "vm: case $case_name passed"; exit 0; fi
echo "vm: case $case_name: $failures check(s) failed"
exit 1
