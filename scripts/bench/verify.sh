#!/usr/bin/env bash
# Verify's cost (issue 19), this build against a baseline build in the same run:
#   a. `verify` of the seed configuration (both families), already applied;
#   b. `apply --verify` in a fresh namespace against `apply` alone;
#   c. both with 10,000 ignored addresses and 100 ignored port ranges.
# Each measurement runs in an anonymous namespace of its own (`unshare -n`) made to look like
# a pod: loopback up, an eth0 (one end of a veth pair whose other end is in the same
# namespace) with an IPv4 and an IPv6 address and default routes through it. Prints a
# markdown section on standard output. Called by scripts/bench.sh (section 5); runs alone too:
#
#   scripts/bench/verify.sh NEW_BINARY BASELINE_BINARY [RUNS]
#
# The baseline is `main` before issue 19 (24ba6f6), built with
#   git archive 24ba6f6 | tar -x -C DIR/src && cargo build --release --target-dir DIR/target
set -euo pipefail

NEW=$1
OLD=$2
RUNS=${3:-20}
# The old verify waits a second per family for its "not redirected" verdicts.
OLD_RUNS=$(( RUNS < 6 ? RUNS : 6 ))
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SEED=$REPO/examples/taskdef-fargate.json
WORK=$(mktemp -d /tmp/meshinit-bench-verify.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# A pod-like namespace (run inside `unshare -n`).
POD="set -e; ip link set lo up; ip link add eth0 type veth peer name gw0; \
ip link set gw0 up; ip link set eth0 up; ip addr add 10.1.0.2/24 dev eth0; \
ip route add default via 10.1.0.1 dev eth0 onlink; \
ip -6 addr add 2001:db8:1::2/64 dev eth0 nodad; ip -6 route add default via 2001:db8:1::1 dev eth0 onlink"

# The seed's values with 10,000 scattered /32s across 10.0.0.0/8 and 100 port ranges.
awk 'BEGIN {
    printf "{\"type\":\"APPMESH\",\"containerName\":\"envoy\",\"properties\":["
    printf "{\"name\":\"IgnoredUID\",\"value\":\"1337\"},{\"name\":\"ProxyIngressPort\",\"value\":\"15000\"},"
    printf "{\"name\":\"ProxyEgressPort\",\"value\":\"15001\"},{\"name\":\"AppPorts\",\"value\":\"9080\"},"
    printf "{\"name\":\"EgressIgnoredIPs\",\"value\":\"169.254.170.2,169.254.169.254"
    for (i = 0; i < 10000; i++) printf ",10.%d.%d.%d", int(i / 250) % 250 + 1, i % 250 + 1, 7
    printf "\"},{\"name\":\"EgressIgnoredPorts\",\"value\":\"22"
    for (i = 0; i < 100; i++) printf ",%d-%d", 20000 + 10 * i, 20004 + 10 * i
    printf "\"}]}\n"
}' >"$WORK/large.json"

# Milliseconds of `verify` in one namespace, RUNS times after one apply: one number a line.
verify_times() { # binary config runs
    unshare -n sh -c "$POD; $1 apply $2 >/dev/null 2>&1; \
        for i in \$(seq $3); do s=\$(date +%s%N); $1 verify $2 >/dev/null 2>&1 || true; \
        e=\$(date +%s%N); echo \$(( (e - s) / 1000 )); done"
}
# Milliseconds of `CMD` in a fresh pod-like namespace each time (the set-up excluded).
fresh_times() { # runs command...
    local runs=$1 i
    shift
    for i in $(seq "$runs"); do
        unshare -n sh -c "$POD; s=\$(date +%s%N); $*  >/dev/null 2>&1 || true; \
            e=\$(date +%s%N); echo \$(( (e - s) / 1000 ))"
    done
}
median_ms() { sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f", m / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN { ok = (op == "<=") ? v <= t : v >= t; print ok ? "met" : "NOT met" }'; }
outcome() { # binary config
    unshare -n sh -c "$POD; $1 apply $2 >/dev/null 2>&1; $1 verify $2 2>/dev/null | grep -E '^[0-9]+ passed'"
}

for case in seed large; do
    config=$SEED
    [ "$case" = large ] && config=$WORK/large.json
    verify_times "$NEW" "$config" "$RUNS" | median_ms >"$WORK/$case.verify.new"
    verify_times "$OLD" "$config" "$OLD_RUNS" | median_ms >"$WORK/$case.verify.old"
    fresh_times "$RUNS" "$NEW apply $config" | median_ms >"$WORK/$case.apply.new"
    fresh_times "$RUNS" "$NEW apply --verify $config" | median_ms >"$WORK/$case.applyverify.new"
    fresh_times "$OLD_RUNS" "$OLD apply --verify $config" | median_ms >"$WORK/$case.applyverify.old"
    outcome "$NEW" "$config" >"$WORK/$case.summary.new"
    outcome "$OLD" "$config" >"$WORK/$case.summary.old"
done
v() { cat "$WORK/$1"; }

cat <<EOF

## 7. Verify (issue 19): \`verify\` and \`apply --verify\`, this build vs the baseline

\`scripts/bench/verify.sh $NEW $OLD $RUNS\`: the baseline is \`main\` before issue 19
(24ba6f6), built from \`git archive\` in a temporary directory. Every run is in a pod-like
namespace (\`unshare -n\`, loopback, an eth0 with IPv4 and IPv6 default routes; the set-up
itself is not timed); medians of $RUNS runs ($OLD_RUNS for the baseline, whose runs take a second
or more each). \`verify\` runs after one \`apply\` in its namespace; \`apply\` and
\`apply --verify\` each start from a fresh namespace. Default backend (\`auto\`: nftables).
"Large": the seed's values plus 10,000 scattered ignored /32s and 100 ignored port ranges.

| what | this build | baseline | baseline / this |
| --- | ---: | ---: | ---: |
| \`verify\`, seed, both families | **$(v seed.verify.new) ms** | $(v seed.verify.old) ms | $(ratio "$(v seed.verify.old)" "$(v seed.verify.new)") |
| \`apply\`, seed, fresh namespace | $(v seed.apply.new) ms | — | — |
| \`apply --verify\`, seed, fresh namespace | **$(v seed.applyverify.new) ms** | $(v seed.applyverify.old) ms | $(ratio "$(v seed.applyverify.old)" "$(v seed.applyverify.new)") |
| \`verify\`, large | **$(v large.verify.new) ms** | $(v large.verify.old) ms | $(ratio "$(v large.verify.old)" "$(v large.verify.new)") |
| \`apply\`, large, fresh namespace | $(v large.apply.new) ms | — | — |
| \`apply --verify\`, large, fresh namespace | **$(v large.applyverify.new) ms** | $(v large.applyverify.old) ms | $(ratio "$(v large.applyverify.old)" "$(v large.applyverify.new)") |

- \`verify\` of the seed: **$(v seed.verify.new) ms** (target <= 30 ms: $(verdict "$(v seed.verify.new)" '<=' 30)).
- \`apply --verify\` vs \`apply\`, seed: **$(ratio "$(v seed.applyverify.new)" "$(v seed.apply.new)")x** (target <= 2x: $(verdict "$(ratio "$(v seed.applyverify.new)" "$(v seed.apply.new)")" '<=' 2));
  large: **$(ratio "$(v large.applyverify.new)" "$(v large.apply.new)")x** ($(verdict "$(ratio "$(v large.applyverify.new)" "$(v large.apply.new)")" '<=' 2)).
- Checks (this build / baseline): seed "$(v seed.summary.new)" / "$(v seed.summary.old)";
  large "$(v large.summary.new)" / "$(v large.summary.old)".
EOF
