#!/usr/bin/env bash
# Builds meshinit's OCI images offline, from this tree and Debian's packages only (nothing is
# pulled from a container registry), into the local podman image store:
#   localhost/meshinit:VERSION           FROM scratch + the static binary (/meshinit)
#   localhost/meshinit:VERSION-iptables  + iptables (legacy and nft, IPv4 and IPv6) and ipset,
#                                         unpacked from Debian's .debs: what `apply` and the
#                                         CNI mode run today
# and prints their sizes. Push with `podman push localhost/meshinit:VERSION REGISTRY/...`
# (see docs/deploying.md, "Container image").
#
# Usage: scripts/build-image.sh [--variant static|iptables|all] [--binary FILE]
#                               [--name NAME] [--tag TAG]
#   --variant  which image(s) to build (default: all)
#   --binary   use this meshinit instead of building the static one (scripts/build-static.sh);
#              the static variant refuses a dynamically linked binary (it has no libc)
#   --name     image name (default: localhost/meshinit); --tag the tag (default: the crate version)
# Environment: PODMAN (default "podman"), e.g. "podman --root DIR --runroot DIR" for a private
# image store. Needs podman (or buildah's podman-compatible build), apt-get and dpkg-deb.
# Downloaded packages are cached in target/image/debs.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=all
binary=
name=localhost/meshinit
tag=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) variant=${2:?--variant needs static, iptables or all}; shift 2 ;;
    --binary) binary=${2:?--binary needs a file}; shift 2 ;;
    --name) name=${2:?--name needs an image name}; shift 2 ;;
    --tag) tag=${2:?--tag needs a tag}; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$variant" in
  static|iptables|all) ;;
  *) echo "build-image.sh: --variant $variant: expected static, iptables or all" >&2; exit 2 ;;
esac
read -r -a podman <<<"${PODMAN:-podman}"
command -v "${podman[0]}" >/dev/null || {
  echo "build-image.sh: ${podman[0]} is not installed (Debian: apt-get install podman)" >&2
  exit 1
}

if [ -z "$binary" ]; then
  scripts/build-static.sh >&2
  binary=target/$(rustc -vV | sed -n 's/^host: //p')/release/meshinit
fi
[ -x "$binary" ] || { echo "build-image.sh: $binary is not an executable" >&2; exit 2; }
# ldd says "statically linked" (static-pie) or "not a dynamic executable" for static binaries.
# (grep reads all of ldd's output: `grep -q` would exit early and, under pipefail, the
# SIGPIPE'd ldd would make a dynamic binary look static.)
if [ "$variant" != iptables ] && ldd "$binary" 2>&1 | grep '=>' >/dev/null; then
  echo "build-image.sh: $binary is dynamically linked: the FROM scratch image has no libc;" \
    "use scripts/build-static.sh's binary, or --variant iptables" >&2
  exit 2
fi

# Downloaded packages are cached and shared; each run builds in contexts of its own, so
# concurrent runs (the podman tests) never remove each other's.
cache=target/image
mkdir -p "$cache/debs"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
built=()

build() { # build CONTEXT IMAGE
  "${podman[@]}" build --quiet --network none --tag "$2" --file "$1/Containerfile" "$1" >/dev/null
  built+=("$2")
}

labels='LABEL org.opencontainers.image.title="meshinit" \
      org.opencontainers.image.description="Programs the NAT rules that send a workload'"'"'s TCP traffic through its service-mesh sidecar (App Mesh compatible)" \
      org.opencontainers.image.version="'"$tag"'"'

if [ "$variant" != iptables ]; then
  mkdir -p "$work/static"
  install -m 0755 "$binary" "$work/static/meshinit"
  cat >"$work/static/Containerfile" <<EOF
FROM scratch
COPY meshinit /meshinit
$labels
ENTRYPOINT ["/meshinit"]
EOF
  build "$work/static" "$name:$tag"
fi

if [ "$variant" != static ]; then
  # iptables and ipset with everything they depend on (libc included), from Debian's
  # packages; no maintainer scripts run, so the alternatives links are made below.
  packages=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances iptables ipset 2>/dev/null | grep '^[a-z0-9]' | sort -u)
  if [ -z "$packages" ] || ! (cd "$cache/debs" && apt-get download $packages >/dev/null 2>&1); then
    echo "build-image.sh: updating the package lists to download: $(echo $packages)" >&2
    apt-get update -qq
    packages=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances iptables ipset 2>/dev/null | grep '^[a-z0-9]' | sort -u)
    (cd "$cache/debs" && apt-get download $packages >/dev/null)
  fi
  rootfs=$work/iptables/rootfs
  mkdir -p "$rootfs"
  for package in $packages; do
    # The newest downloaded version of each package.
    deb=$(ls -t "$cache/debs/${package}"_*.deb | head -n 1)
    dpkg-deb -x "$deb" "$rootfs"
  done
  rm -rf "$rootfs"/usr/share/{doc,man,info,lintian,locale} "$rootfs"/usr/lib/x86_64-linux-gnu/gconv
  for family in iptables ip6tables; do
    for verb in "" -save -restore; do
      ln -sf "xtables-nft-multi" "$rootfs/usr/sbin/$family$verb"
    done
  done
  # The legacy backend's lock lives in /run; temporary files in /tmp.
  mkdir -p "$rootfs/run" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  install -m 0755 "$binary" "$work/iptables/meshinit"
  cat >"$work/iptables/Containerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY meshinit /meshinit
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$labels
ENTRYPOINT ["/meshinit"]
EOF
  build "$work/iptables" "$name:$tag-iptables"
fi

for image in "${built[@]}"; do
  bytes=$("${podman[@]}" image inspect --format '{{.Size}}' "$image")
  printf '%s\t%s bytes (%s MiB)\n' "$image" "$bytes" "$(awk "BEGIN {printf \"%.1f\", $bytes / 1048576}")"
done
