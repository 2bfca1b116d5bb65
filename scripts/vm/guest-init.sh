#!/bin/bash
# PID 1 inside the qemu VM of scripts/vm-test.sh, on the Debian root filesystem: prepares a
# minimal system (no systemd), puts the project tree at the same absolute path as on the
# host (the test binaries have it compiled in), runs scripts/vm/inner.sh for the case named
# on the kernel command line, reports its exit status on the second serial port, powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
exec </dev/null >/dev/ttyS1 2>&1

mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /run/netns /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ln -sfn /proc/self/fd /dev/fd
for i in 0 1 2; do ln -sfn "/proc/self/fd/$i" "/dev/$(echo stdin stdout stderr | cut -d' ' -f$((i + 1)))"; done
hostname meshinit-vm
ip link set lo up

# shellcheck source=/dev/null
. /mnt/job/job.env   # PROJECT_DIR, TEST_EXECUTABLES (relative to PROJECT_DIR)
mkdir -p "$PROJECT_DIR"
mount --bind "/mnt/job/tree$PROJECT_DIR" "$PROJECT_DIR"

case_name=$(sed -n 's/.*vmtest\.case=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "vm: kernel $(uname -r), case ${case_name:-?}, $(nproc) CPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB, initial netns inode $(stat -L -c %i /proc/self/ns/net)"
start=$(date +%s)
bash "$PROJECT_DIR/scripts/vm/inner.sh" --case "${case_name:-suite}" --prebuilt "$TEST_EXECUTABLES"
status=$?
echo "vm: case ${case_name:-?} took $(( $(date +%s) - start ))s"
echo "VMTEST-EXIT=$status"
sync
busybox reboot -f
sleep 60
