#!/usr/bin/env bash
# The main job on an example, in throwaway namespaces: apply the seed's ECS task definition
# to an "app" namespace, then show where real connections land, then clean up.
# Usage: sudo scripts/demo.sh [CONFIG]   (default: examples/taskdef-fargate.json)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-examples/taskdef-fargate.json}
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (it creates network namespaces)" >&2; exit 1; }

need=()
command -v iptables-nft-restore >/dev/null || need+=(iptables)
command -v nft >/dev/null || need+=(nftables)  # shows the native table auto chooses
[ -x /usr/bin/python3 ] || need+=(python3)  # the system one: root-only pyenv shims cannot run as uid 1000
command -v setpriv >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet
meshinit=$PWD/target/release/meshinit

app=meshinit-demo-app-$$ peer=meshinit-demo-peer-$$
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  ip netns del "$app" 2>/dev/null || true
  ip netns del "$peer" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

ip netns add "$app"; ip netns add "$peer"
ip -n "$app" link set lo up; ip -n "$peer" link set lo up
ip -n "$app" link add eth0 type veth peer name peer0 netns "$peer"
ip -n "$app" addr add 198.51.100.1/24 dev eth0; ip -n "$app" addr add 2001:db8:100::1/64 dev eth0 nodad
ip -n "$app" link set eth0 up
ip -n "$peer" addr add 198.51.100.2/24 dev peer0; ip -n "$peer" addr add 2001:db8:100::2/64 dev peer0 nodad
ip -n "$peer" link set peer0 up
for a in 203.0.113.7 169.254.169.254; do ip -n "$peer" addr add "$a/32" dev peer0; done
ip -n "$app" route add default via 198.51.100.2
ip -n "$app" -6 route add default via 2001:db8:100::2

# The init-container step: apply, then prove it with real connections while the proxy
# ports are still free (verify stands in for Envoy on them).
echo "== meshinit apply --verify $config (in namespace $app)"
ip netns exec "$app" "$meshinit" apply --verify "$config"
echo; echo "== installed rules (nft list table inet meshinit: auto chose the native backend)"
ip netns exec "$app" nft list table inet meshinit

# A listener that answers with its own name and the connection's original destination.
listener='
import socket, struct, sys
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(16)
while True:
    c, _ = s.accept()
    local = "%s:%d" % c.getsockname()
    try:
        raw = c.getsockopt(socket.SOL_IP, 80, 16)   # SO_ORIGINAL_DST
        dst = "%s:%d" % (socket.inet_ntoa(raw[4:8]), struct.unpack(">H", raw[2:4])[0])
    except OSError:                                 # no conntrack entry: not NATed here
        dst = local
    how = "direct" if dst == local else "redirected, original destination " + dst
    c.sendall(("%s (%s)" % (name, how)).encode()); c.close()
'
start() { ip netns exec "$1" /usr/bin/python3 -c "$listener" "$2" "$3" & pids+=($!); }
start "$app" "envoy egress listener :15001" 15001
start "$app" "envoy ingress listener :15000" 15000
start "$peer" "remote host :80" 80
start "$peer" "remote host :22" 22
sleep 0.5

client='
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
print(s.recv(200).decode())
'
connect() { # NETNS UID DEST PORT
  printf '  %-34s -> ' "uid $2 to $3:$4"
  ip netns exec "$1" setpriv --reuid "$2" --regid "$2" --clear-groups /usr/bin/python3 -c "$client" "$3" "$4" || echo "(failed)"
}

echo; echo "== where connections land (listeners stand in for Envoy and two remote services)"
echo " app egress:"
connect "$app" 1000 203.0.113.7 80
connect "$app" 1337 203.0.113.7 80
connect "$app" 1000 203.0.113.7 22
connect "$app" 1000 169.254.169.254 80
echo " inbound from a peer to AppPort 9080:"
connect "$peer" 0 198.51.100.1 9080
echo; echo "== meshinit status"
ip netns exec "$app" "$meshinit" status "$config"
echo; echo "== meshinit clean, then the same connection goes direct"
ip netns exec "$app" "$meshinit" clean
connect "$app" 1000 203.0.113.7 80
