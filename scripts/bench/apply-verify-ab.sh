#!/usr/bin/env bash
# `apply` and `apply --verify` of the seed configuration, two or more builds interleaved run
# by run (so a busy machine weighs on each alike), each run in a fresh pod-like namespace
# (as scripts/bench/verify.sh makes them). Prints the median of each.
#
#   scripts/bench/apply-verify-ab.sh RUNS BINARY...        (CHRT="chrt -f 10" to lower noise)
set -euo pipefail
RUNS=$1
shift
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SEED=$REPO/examples/taskdef-fargate.json
POD="set -e; ip link set lo up; ip link add eth0 type veth peer name gw0; \
ip link set gw0 up; ip link set eth0 up; ip addr add 10.1.0.2/24 dev eth0; \
ip route add default via 10.1.0.1 dev eth0 onlink; \
ip -6 addr add 2001:db8:1::2/64 dev eth0 nodad; ip -6 route add default via 2001:db8:1::1 dev eth0 onlink"
for _ in $(seq "$RUNS"); do
    for binary in "$@"; do
        for mode in apply "apply --verify"; do
            t=$(${CHRT:-} unshare -n sh -c "$POD; s=\$(date +%s%N); $binary $mode $SEED >/dev/null 2>&1 || true; \
                e=\$(date +%s%N); echo \$(( (e - s) / 1000 ))")
            echo "$binary|$mode|$t"
        done
    done
done | sort -t'|' -k1,2 -k3n | awk -F'|' '{ k = $1 "|" $2; c[k]++; v[k, c[k]] = $3 }
    END { for (k in c) printf "%s: median %.1f ms (%d runs)\n", k, v[k, int((c[k] + 1) / 2)] / 1000, c[k] }' | sort
