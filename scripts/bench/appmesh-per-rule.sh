#!/bin/sh
# The AWS App Mesh CNI plugin's way of installing the egress/ingress NAT rules, for
# comparison in scripts/bench.sh: one iptables process per rule, per family, each with
# --wait, after an `iptables --version` probe (what its go-iptables library does), IPv4 then
# IPv6. The rules are the ones listed in shared/docs/appmesh-facts.md, with the same values
# meshinit installs for examples/taskdef-fargate.json (override through the variables below).
#
# Only ever run it inside a throwaway network namespace (scripts/bench.sh uses `unshare -n`):
# it refuses the machine's own namespace before running any iptables command.
#
#   BENCH_DRY_RUN=1 scripts/bench/appmesh-per-rule.sh   # print the commands instead
set -eu

: "${IPTABLES_BACKEND:=nft}"   # iptables-nft, like meshinit's auto choice in a fresh namespace
: "${IGNORED_UID:=1337}"
: "${IGNORED_GID:=}"
: "${PROXY_INGRESS_PORT:=15000}"
: "${APP_PORTS:=9080}"
: "${PROXY_EGRESS_PORT:=15001}"
: "${EGRESS_IGNORED_PORTS:=22}"
: "${EGRESS_IGNORED_IPV4:=169.254.170.2,169.254.169.254,169.254.170.23}"
: "${EGRESS_IGNORED_IPV6:=fd00:ec2::23,fd00:ec2::254}"
: "${ENABLE_IPV6:=1}"
: "${BENCH_DRY_RUN:=0}"

INITIAL_NETNS_INODE=4026531833   # PROC_NET_INIT_INO: the machine's own namespace

if [ "$BENCH_DRY_RUN" != 1 ]; then
    inode=$(stat -L -c %i /proc/self/ns/net)
    if [ "$inode" = "$INITIAL_NETNS_INODE" ]; then
        echo "appmesh-per-rule.sh: refusing to run in the machine's own network namespace;" \
             "run it as: unshare -n $0" >&2
        exit 1
    fi
fi

run() {
    if [ "$BENCH_DRY_RUN" = 1 ]; then
        echo "$*"
    else
        "$@"
    fi
}

# Sets CHUNKS to the comma-separated list $1 in groups of at most 15 (the plugin's multiport
# limit; it drops the rest, here they are grouped so the rules match meshinit's), one group
# per line. Shell builtins only: the only processes this script starts are the ones measured.
chunk15() {
    CHUNKS='' rest=$1, group='' count=0
    while [ -n "$rest" ]; do
        item=${rest%%,*}
        rest=${rest#*,}
        [ -n "$item" ] || continue
        group=${group:+$group,}$item
        count=$((count + 1))
        if [ "$count" -eq 15 ]; then
            CHUNKS="$CHUNKS$group
"
            group='' count=0
        fi
    done
    [ -z "$group" ] || CHUNKS="$CHUNKS$group"
}

setup_family() {
    ipt=$1
    ignored_ips=$2
    # go-iptables' probe: decides whether --wait and -C are supported.
    if [ "$BENCH_DRY_RUN" = 1 ]; then echo "$ipt --version"; else "$ipt" --version >/dev/null; fi
    if [ -n "$PROXY_INGRESS_PORT" ] && [ -n "$APP_PORTS" ]; then
        run "$ipt" -t nat -N APPMESH_INGRESS --wait
        chunk15 "$APP_PORTS"
        for ports in $CHUNKS; do
            run "$ipt" -t nat -A APPMESH_INGRESS -p tcp -m multiport --dports "$ports" \
                -j REDIRECT --to-port "$PROXY_INGRESS_PORT" --wait
        done
        run "$ipt" -t nat -A PREROUTING -p tcp -m addrtype ! --src-type LOCAL \
            -j APPMESH_INGRESS --wait
    fi
    run "$ipt" -t nat -N APPMESH_EGRESS --wait
    if [ -n "$IGNORED_UID" ]; then
        run "$ipt" -t nat -A APPMESH_EGRESS -m owner --uid-owner "$IGNORED_UID" -j RETURN --wait
    fi
    if [ -n "$IGNORED_GID" ]; then
        run "$ipt" -t nat -A APPMESH_EGRESS -m owner --gid-owner "$IGNORED_GID" -j RETURN --wait
    fi
    chunk15 "$EGRESS_IGNORED_PORTS"
    for ports in $CHUNKS; do
        run "$ipt" -t nat -A APPMESH_EGRESS -p tcp -m multiport --dports "$ports" -j RETURN --wait
    done
    if [ -n "$ignored_ips" ]; then
        # One process; iptables expands the address list into one rule per address.
        run "$ipt" -t nat -A APPMESH_EGRESS -p tcp -d "$ignored_ips" -j RETURN --wait
    fi
    run "$ipt" -t nat -A APPMESH_EGRESS -p tcp -j REDIRECT --to "$PROXY_EGRESS_PORT" --wait
    run "$ipt" -t nat -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS --wait
}

setup_family "iptables-$IPTABLES_BACKEND" "$EGRESS_IGNORED_IPV4"
if [ "$ENABLE_IPV6" = 1 ]; then
    setup_family "ip6tables-$IPTABLES_BACKEND" "$EGRESS_IGNORED_IPV6"
fi
