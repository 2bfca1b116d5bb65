#!/bin/sh
# One CNI ADD into a fresh pod namespace, as a runtime does it, for bench.sh: the pod is a
# process in an anonymous network namespace of its own (held open while the plugin runs,
# then killed, so the namespace vanishes: no named namespace is created), and the plugin
# runs from the caller's namespace (bench.sh runs this under `unshare -n`) with that
# namespace as CNI_NETNS. Usage: cni-add.sh PLUGIN STDIN-FILE  (PLUGIN `true`: the floor)
plugin=$1 stdin=$2
unshare -n sh -c 'echo $$; exec sleep 60' | {
    # The pod's pid, printed from inside its namespace: the namespace exists by now.
    read -r pod
    CNI_COMMAND=ADD CNI_CONTAINERID=bench CNI_NETNS=/proc/$pod/ns/net CNI_IFNAME=eth0 \
        CNI_PATH=/nonexistent "$plugin" <"$stdin" >/dev/null
    status=$?
    kill "$pod"
    exit $status
}
