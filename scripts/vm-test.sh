#!/usr/bin/env bash
# Runs meshinit's namespace test suite as root inside qemu VMs on real Debian kernels, plus the
# kernel cases a namespace on this machine cannot produce, and prints a kernel x case matrix.
#
# Usage: sudo scripts/vm-test.sh [--all] [--kernel K]... [--case C]... [options]
#   (default)          one kernel other than the machine's own (bookworm's 6.1, else trixie's),
#                      every case
#   --all              every kernel (bookworm 6.1, trixie 6.12, the newest unstable) x every case
#   --kernel K         bookworm | trixie | sid (repeatable)
#   --case C           suite | ipv6-disabled | no-legacy | no-nft-compat | no-nft-nat (repeatable; the last
#                      is a hook for the native nf_tables backend and not applicable yet)
#   --accel A          auto (default: KVM when a probe boot reaches init quickly, else TCG) | kvm | tcg
#   --timeout S        seconds per VM boot (default: 2400 for the suite, 300 for the other cases)
#   --refresh          resolve the newest kernels again instead of the cached ones
#   --verbose          stream everything the VM prints, not only the summary lines
# Environment: VM_TEST_ONLY=REGEX runs only the test executables whose names match (the suite
#   case), e.g. VM_TEST_ONLY='faults_and_races|cni_install_node' to chase one failure.
# Cache: target/vm/ (kernels, apt lists, root filesystem, disk images, logs). Needs network
# only to fill it. The VMs have no network device; nothing here touches this machine's network.
set -euo pipefail
cd "$(dirname "$0")/.."
project=$PWD
vm=$project/target/vm
mirror=${VM_TEST_MIRROR:-http://deb.debian.org/debian}
all_kernels=(bookworm trixie sid)
all_cases=(suite ipv6-disabled no-legacy no-nft-compat no-nft-nat)
# Legacy x_tables tables: with these refused, iptables-legacy has no table to program.
legacy_modules=ip_tables,ip6_tables,iptable_nat,ip6table_nat,iptable_filter,ip6table_filter,iptable_mangle,ip6table_mangle,iptable_raw,ip6table_raw,iptable_security,ip6table_security,arp_tables,arptable_filter

die() { echo "vm-test.sh: $*" >&2; exit 1; }
log() { echo "vm-test.sh: $*" >&2; }

kernels=() cases=() accel=auto timeout_override="" refresh="" verbose=""
while [ $# -gt 0 ]; do
  case $1 in
    --all) kernels=("${all_kernels[@]}"); cases=("${all_cases[@]}"); shift ;;
    --kernel) [[ " ${all_kernels[*]} " == *" ${2:-} "* ]] || die "--kernel: \"${2:-}\" is not one of: ${all_kernels[*]}"
      kernels+=("$2"); shift 2 ;;
    --case) [[ " ${all_cases[*]} " == *" ${2:-} "* ]] || die "--case: \"${2:-}\" is not one of: ${all_cases[*]}"
      cases+=("$2"); shift 2 ;;
    --accel) [[ " auto kvm tcg " == *" ${2:-} "* ]] || die "--accel: \"${2:-}\" is not one of: auto kvm tcg"
      accel=$2; shift 2 ;;
    --timeout) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--timeout: \"${2:-}\" is not a number of seconds"
      timeout_override=$2; shift 2 ;;
    --refresh) refresh=1; shift ;;
    --verbose) verbose=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument \"$1\" (see --help)" ;;
  esac
done
[ ${#cases[@]} -gt 0 ] || cases=("${all_cases[@]}")
[ "$(id -u)" -eq 0 ] || die "run as root (builds a root filesystem with mmdebstrap and disk images)"

# --- host tools ---------------------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
command -v depmod >/dev/null || need+=(kmod)
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
    die "cannot install ${need[*]} with apt-get"
  fi
fi
mkdir -p "$vm"/{apt,kernels,images,run,logs}

# --- kernels from Debian's archive, through a throwaway apt configuration ----------------------
# Only files under target/vm/apt/SUITE are read or written: not /etc/apt, not /var/lib/apt.
apt_in() { # SUITE apt-get|apt-cache ARGS...
  local suite=$1 tool=$2 dir=$vm/apt/$1; shift 2
  mkdir -p "$dir"/{lists/partial,cache/archives/partial,parts,prefs}
  [ -f "$dir/status" ] || : >"$dir/status"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$dir/sources.list"
  cat >"$dir/apt.conf" <<EOF
Dir::Etc::sourcelist "$dir/sources.list";
Dir::Etc::sourceparts "-";
Dir::Etc::parts "$dir/parts";
Dir::Etc::preferencesparts "$dir/prefs";
Dir::State::Lists "$dir/lists";
Dir::State::status "$dir/status";
Dir::Cache "$dir/cache";
APT::Sandbox::User "root";
Acquire::Languages "none";
// Signatures are still checked; a mirror snapshot of unstable may be past its Valid-Until.
Acquire::Check-Valid-Until "false";
EOF
  APT_CONFIG=$dir/apt.conf "$tool" -o Dir::Etc::sourcelist="$dir/sources.list" \
    -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" "$@"
}

# Depends of PACKAGE in SUITE, one name per line (alternatives and versions dropped).
depends_of() { apt_in "$1" apt-cache depends --no-recommends --no-suggests "$2" 2>/dev/null |
  sed -n 's/^ *|\{0,1\}Depends: \([^ <>]*\).*/\1/p'; }

# Leaves target/vm/kernels/SUITE/{version,vmlinuz,lib/modules/VERSION/}; reuses them when present.
fetch_kernel() {
  local suite=$1 dir=$vm/kernels/$1 ver pkgs tmp
  [ -f "$dir/version" ] && [ -z "$refresh" ] && return 0
  log "$suite: looking up the newest cloud kernel"
  apt_in "$suite" apt-get update -qq ||
    die "$suite: apt-get update failed for $mirror $suite (network? set VM_TEST_MIRROR to another mirror)"
  ver=$(depends_of "$suite" linux-image-cloud-amd64 | sed -n 's/^linux-image-\(.*-cloud-amd64\)$/\1/p' | head -1)
  [ -n "$ver" ] || die "$suite: linux-image-cloud-amd64 names no versioned kernel package in $mirror"
  # Up to trixie one package holds the kernel; from 7.x on it is split into binary/modules/base.
  mapfile -t pkgs < <(depends_of "$suite" "linux-image-$ver" |
    grep -Fx -e "linux-binary-$ver" -e "linux-modules-$ver" -e "linux-base-$ver" || true)
  [ ${#pkgs[@]} -gt 0 ] || pkgs=("linux-image-$ver")
  tmp=$dir.tmp; rm -rf "$tmp"; mkdir -p "$tmp/debs" "$tmp/root"
  log "$suite: downloading ${pkgs[*]}"
  (cd "$tmp/debs" && apt_in "$suite" apt-get download -qq "${pkgs[@]}") ||
    die "$suite: apt-get download ${pkgs[*]} failed"
  for deb in "$tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$tmp/root" || die "$suite: cannot unpack $deb"; done
  local vmlinuz moddir
  for vmlinuz in "$tmp/root/boot/vmlinuz-$ver" "$tmp/root/usr/lib/modules/$ver/vmlinuz" "$tmp/root/lib/modules/$ver/vmlinuz" ""; do
    [ -f "$vmlinuz" ] && break
  done
  [ -n "$vmlinuz" ] || die "$suite: no vmlinuz for $ver in ${pkgs[*]}"
  for moddir in "$tmp/root/usr/lib/modules/$ver" "$tmp/root/lib/modules/$ver" ""; do
    [ -d "$moddir/kernel" ] && break
  done
  [ -n "$moddir" ] || die "$suite: no modules for $ver in ${pkgs[*]}"
  mkdir -p "$tmp/lib/modules"
  mv "$vmlinuz" "$tmp/vmlinuz"
  mv "$moddir" "$tmp/lib/modules/$ver"
  depmod -b "$tmp" "$ver" || die "$suite: depmod failed for $ver"
  rm -rf "$tmp/root" "$tmp/debs"
  echo "$ver" >"$tmp/version"
  rm -rf "$dir"; mv "$tmp" "$dir"
  rm -rf "$vm/apt/$suite/lists" "$vm/apt/$suite/cache"  # 100+ MB; --refresh updates them anyway
}

# --- root filesystem: Debian (the host's release, so the host-built tests find their glibc) ----
rootfs_suite() {
  local codename
  # shellcheck source=/dev/null
  codename=$(. /etc/os-release 2>/dev/null; [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}")
  echo "${codename:-bookworm}"
}
build_rootfs() {
  local suite pkgs stamp
  suite=$(rootfs_suite)
  pkgs=$(grep -v '^\s*\(#\|$\)' scripts/vm/packages | tr '\n' ',')busybox-static
  stamp="$suite $mirror $pkgs"
  [ -d "$vm/rootfs" ] && [ "$(cat "$vm/rootfs.stamp" 2>/dev/null)" = "$stamp" ] && return 0
  log "building the $suite root filesystem with mmdebstrap ($pkgs)"
  rm -rf "$vm/rootfs" "$vm/rootfs.tmp" "$vm/rootfs.stamp"
  mmdebstrap --variant=minbase --include="$pkgs" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' "$suite" "$vm/rootfs.tmp" "$mirror" \
    >"$vm/logs/mmdebstrap.log" 2>&1 || die "mmdebstrap failed, see $vm/logs/mmdebstrap.log"
  mv "$vm/rootfs.tmp" "$vm/rootfs"
  echo "$stamp" >"$vm/rootfs.stamp"
}

# Initramfs per kernel: busybox, the virtio block driver, scripts/vm/initramfs-init (cheap:
# built on every run).
build_initrd() {
  local suite=$1 ver dir initrd initdir line path name
  dir=$vm/kernels/$suite ver=$(cat "$vm/kernels/$suite/version")
  initrd=$vm/images/$ver.initrd initdir=$vm/images/$ver.initrd.d
  rm -rf "$initdir"; mkdir -p "$initdir"/{bin,dev,proc,sys,modules}
  cp "$vm/rootfs/usr/bin/busybox" "$initdir/bin/busybox"
  cp scripts/vm/initramfs-init "$initdir/init"
  mknod -m 600 "$initdir/dev/console" c 5 1
  : >"$initdir/modules/order"
  while read -r line; do
    [[ $line == insmod\ * ]] || continue
    path=${line#insmod }; path=${path%% *}; name=$(basename "$path")
    case $name in
      *.xz) xz -dc "$path" >"$initdir/modules/${name%.xz}"; name=${name%.xz} ;;
      *.zst) zstd -qdc "$path" >"$initdir/modules/${name%.zst}"; name=${name%.zst} ;;
      *) cp "$path" "$initdir/modules/$name" ;;
    esac
    grep -qx "$name" "$initdir/modules/order" || echo "$name" >>"$initdir/modules/order"
  done < <(modprobe -d "$dir" -S "$ver" --show-depends -a virtio_pci virtio_blk)
  grep -q virtio_blk "$initdir/modules/order" || die "$suite: virtio_blk not found among the modules of $ver"
  (cd "$initdir" && find . | "$vm/rootfs/usr/bin/busybox" cpio -o -H newc 2>/dev/null) >"$initrd" ||
    die "$suite: cannot pack the initramfs"
  rm -rf "$initdir"
}

# Root disk per kernel: the root filesystem plus that kernel's modules (loaded on demand).
build_root_disk() {
  local suite=$1 ver stamp img staging mb
  ver=$(cat "$vm/kernels/$suite/version")
  img=$vm/images/$ver.img
  stamp="$(cat "$vm/rootfs.stamp") $ver"
  [ -f "$img" ] && [ "$(cat "$img.stamp" 2>/dev/null)" = "$stamp" ] && return 0
  log "$suite: building the root disk for $ver"
  staging=$vm/images/$ver.staging
  rm -rf "$staging" "$img"
  cp -al "$vm/rootfs" "$staging"
  mkdir -p "$staging/usr/lib/modules"
  cp -al "$vm/kernels/$suite/lib/modules/$ver" "$staging/usr/lib/modules/$ver"
  mb=$(( $(du -sm "$staging" | cut -f1) * 5 / 4 + 256 ))
  mke2fs -q -F -t ext4 -L vmroot -d "$staging" "$img.tmp" "${mb}M" || die "$suite: mke2fs of the root disk failed"
  mv "$img.tmp" "$img"
  rm -rf "$staging"
  echo "$stamp" >"$img.stamp"
}

# --- the project: test executables and source tree at the same absolute path ----------------
build_job_disk() {
  local json exes=() exe job=$vm/run/job
  log "building the test executables (cargo test --no-run)"
  json=$(cargo test --workspace --no-run --message-format=json --quiet) || die "cargo test --no-run failed"
  while read -r exe; do exes+=("${exe#"$project/"}"); done < <(
    grep '"reason":"compiler-artifact"' <<<"$json" | grep '"profile":{[^}]*"test":true' |
      sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
  [ ${#exes[@]} -gt 0 ] || die "cargo test --no-run listed no test executables"
  if [ -n "${VM_TEST_ONLY:-}" ]; then
    local kept=()
    for exe in "${exes[@]}"; do [[ $(basename "$exe") =~ $VM_TEST_ONLY ]] && kept+=("$exe"); done
    [ ${#kept[@]} -gt 0 ] || die "VM_TEST_ONLY=$VM_TEST_ONLY matches no test executable"
    exes=("${kept[@]}")
  fi
  [ -x target/debug/meshinit ] || die "target/debug/meshinit was not built"
  rm -rf "$job" "$vm/run/job.img"
  mkdir -p "$job/tree$project" "$job/vm"
  cp scripts/vm/* "$job/vm/"
  tar -C "$project" --exclude=./target --exclude=./.git -cf - . | tar -C "$job/tree$project" -xf -
  mkdir -p "$job/tree$project/target/debug/deps"
  cp target/debug/meshinit "$job/tree$project/target/debug/meshinit"
  for exe in "${exes[@]}"; do cp "$exe" "$job/tree$project/$exe"; done
  printf 'PROJECT_DIR=%q\nTEST_EXECUTABLES=%q\n' "$project" "${exes[*]}" >"$job/job.env"
  # The real App Mesh plugin for tests/cni_install_node.rs (CI=true fails it when missing).
  if [ -n "${MESHINIT_PEERS_DIR:-}" ] && [ -f "$MESHINIT_PEERS_DIR/aws-appmesh" ]; then
    mkdir -p "$job/tree$project/target/peers"
    cp "$MESHINIT_PEERS_DIR/aws-appmesh" "$job/tree$project/target/peers/"
    printf 'export MESHINIT_PEERS_DIR=%q\n' "$project/target/peers" >>"$job/job.env"
  fi
  # The tests write under target/tmp on this disk: `cni install` tests copy the ~80 MiB debug
  # binary into a scratch CNI bin directory per installer, many at once. The image is sparse
  # and qemu runs it with snapshot=on, so the headroom costs only what is written.
  local mb=$(( $(du -sm "$job" | cut -f1) + 6144 ))
  mke2fs -q -F -t ext4 -L vmjob -d "$job" "$vm/run/job.img" "${mb}M" || die "mke2fs of the job disk failed"
  rm -rf "$job"
  log "job disk: ${#exes[@]} test executables, ${mb} MiB"
}

# --- qemu ---------------------------------------------------------------------------------
qemu_pid=""
# shellcheck disable=SC2317  # called from the traps
stop_qemu() { [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null; qemu_pid=""; }
trap 'stop_qemu' EXIT
trap 'stop_qemu; exit 130' INT TERM

# boot SUITE ACCEL TIMEOUT APPEND OUTPUT_LOG CONSOLE_LOG [EXTRA QEMU ARGS]: returns qemu's exit
boot() {
  local suite=$1 accel=$2 secs=$3 append=$4 out=$5 console=$6 ver cpu=max; shift 6
  ver=$(cat "$vm/kernels/$suite/version")
  [ "$accel" = kvm ] && cpu=host
  : >"$out"; : >"$console"
  timeout --kill-after=10 "$secs" qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -smp 2 -m 2048 \
    -nodefaults -display none -no-reboot -nic none -monitor none \
    -kernel "$vm/kernels/$suite/vmlinuz" -initrd "$vm/images/$ver.initrd" \
    -append "console=ttyS0 panic=-1 loglevel=4 $append" \
    -serial "file:$console" -serial "file:$out" "$@" </dev/null >"${out%.log}.qemu.log" 2>&1 &
  qemu_pid=$!
  if [ -n "$verbose" ]; then
    tail -n +1 -f --pid="$qemu_pid" "$out" &
  else
    tail -n +1 -f --pid="$qemu_pid" "$out" | grep --line-buffered '^vm: ' &
  fi
  local status=0
  wait "$qemu_pid" || status=$?
  qemu_pid=""
  wait || true  # the tail
  return $status
}

choose_accel() {
  local suite=$1 out=$vm/logs/kvm-probe.log
  [ "$accel" = auto ] || { echo "$accel"; return; }
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    if boot "$suite" kvm 20 vmtest.probe "$out" "$vm/logs/kvm-probe.console.log" >/dev/null 2>&1 &&
      grep -q VMTEST-PROBE-OK "$out"; then
      echo kvm; return
    fi
    log "KVM did not boot a probe VM within 20s (see $vm/logs/kvm-probe.console.log): using TCG"
  fi
  echo tcg
}

case_append() {
  case $1 in
    suite) echo "" ;;
    ipv6-disabled) echo "ipv6.disable=1" ;;
    no-legacy) echo "module_blacklist=$legacy_modules" ;;
    no-nft-compat) echo "module_blacklist=nft_compat" ;;
    no-nft-nat) echo "module_blacklist=nft_chain_nat" ;;
  esac
}

# --- main (a function, so that editing this file while it runs cannot derail it) -------------
declare -A result seconds
main() {
  if [ ${#kernels[@]} -eq 0 ]; then
    # One kernel other than the machine's own: bookworm's, or trixie's when that is running here.
    fetch_kernel bookworm
    if [ "$(cat "$vm/kernels/bookworm/version")" = "$(uname -r)" ]; then kernels=(trixie); else kernels=(bookworm); fi
  fi
  for k in "${kernels[@]}"; do fetch_kernel "$k"; done
  build_rootfs
  for k in "${kernels[@]}"; do build_initrd "$k"; build_root_disk "$k"; done
  local img
  for img in "$vm"/images/*.img; do  # root disks of kernels replaced by --refresh
    [ -e "$img" ] || continue
    cat "$vm"/kernels/*/version 2>/dev/null | grep -xF "$(basename "$img" .img)" >/dev/null ||
      rm -f "$img" "$img.stamp" "${img%.img}.initrd"
  done
  build_job_disk
  accel=$(choose_accel "${kernels[0]}")
  log "accelerator: $accel"

  local k c ver secs out console start status code failed
  for k in "${kernels[@]}"; do
    ver=$(cat "$vm/kernels/$k/version")
    for c in "${cases[@]}"; do
      secs=${timeout_override:-$([ "$c" = suite ] && echo 2400 || echo 300)}
      out=$vm/logs/$k-$c.log console=$vm/logs/$k-$c.console.log
      log "$k ($ver), case $c: booting (timeout ${secs}s)"
      start=$(date +%s)
      status=0
      boot "$k" "$accel" "$secs" "vmtest.case=$c $(case_append "$c")" "$out" "$console" \
        -drive "file=$vm/images/$ver.img,format=raw,if=virtio,snapshot=on" \
        -drive "file=$vm/run/job.img,format=raw,if=virtio,snapshot=on" || status=$?
      seconds[$k,$c]=$(( $(date +%s) - start ))
      code=$(sed -n 's/^VMTEST-EXIT=\([0-9]*\).*/\1/p' "$out" | tail -1)
      case $code in
        0) result[$k,$c]=passed ;;
        77) result[$k,$c]=n/a ;;
        "") if [ $status -eq 124 ] || [ $status -eq 137 ]; then result[$k,$c]="failed (timeout)"
            else result[$k,$c]="failed (no result)"; fi
            log "$k, case $c: the VM ended without a result (qemu exit $status); last console lines:"
            tail -n 15 "$console" | sed 's/^/    /' >&2 ;;
        *) result[$k,$c]=failed
           [ -n "$verbose" ] || { log "$k, case $c failed; last lines of $out:"; tail -n 40 "$out" | sed 's/^/    /' >&2; } ;;
      esac
      log "$k, case $c: ${result[$k,$c]} in ${seconds[$k,$c]}s (logs: $out, $console)"
    done
  done

  echo
  echo "VM test matrix (accelerator: $accel; time per boot in seconds)"
  printf '%-36s' "kernel"; for c in "${cases[@]}"; do printf ' %-20s' "$c"; done; echo
  failed=0
  for k in "${kernels[@]}"; do
    printf '%-36s' "$k $(cat "$vm/kernels/$k/version")"
    for c in "${cases[@]}"; do
      printf ' %-20s' "${result[$k,$c]} (${seconds[$k,$c]}s)"
      [[ ${result[$k,$c]} == failed* ]] && failed=1
    done
    echo
  done
  echo "cache: $(du -sh "$vm" | cut -f1) in $vm"
  return $failed
}
main
exit $?
