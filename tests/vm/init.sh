#!/bin/busybox sh
# PID 1 of the guest that `cargo xtask vm-test` boots. It mounts the kernel
# file systems, loads the modules, runs every payload in
# /etc/dnsgate-vm/payloads and reports on the serial console through the
# DNSGATE-VM-* lines the host parses (xtask/src/vm/report.rs). Every path
# ends in a power-off, so QEMU exits by itself.

/bin/busybox --install -s /bin
# iproute2's ip in /usr/sbin must win over busybox's for the payloads. This
# shell itself prefers its own applets, so it names /usr/sbin/ip in full.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

CONFIG=/etc/dnsgate-vm
result=pass

setup_failed() {
    echo "DNSGATE-VM-SETUP-FAILED: $*"
    result=fail
}

finish() {
    echo "DNSGATE-VM-RESULT: $result"
    sync
    poweroff -f
    # Not reached while poweroff works. If PID 1 exits instead, the kernel
    # panics, and panic=-1 with QEMU's -no-reboot still ends the VM.
    exit 1
}

mount -t proc proc /proc || setup_failed "mount /proc"
mount -t sysfs sysfs /sys || setup_failed "mount /sys"
mount -t devtmpfs devtmpfs /dev || setup_failed "mount /dev"
mount -t tmpfs tmpfs /tmp || setup_failed "mount /tmp"
mount -t tmpfs tmpfs /run || setup_failed "mount /run"
mount -t bpf bpf /sys/fs/bpf || setup_failed "mount bpffs on /sys/fs/bpf"

# Exported settings from the host: CI=true, DNSGATE_EBPF_OBJECT.
. "$CONFIG/env"

echo "DNSGATE-VM-KERNEL: $(uname -r) $(uname -m)"

while read -r module; do
    [ -n "$module" ] || continue
    insmod "$module" || setup_failed "insmod $module"
done < "$CONFIG/modules"

/usr/sbin/ip link set lo up || setup_failed "ip link set lo up"
/usr/sbin/ip netns list > /dev/null || setup_failed "iproute2's ip cannot list namespaces"

verifier_summary=$(cat "$CONFIG/verifier-summary")

# run_payload BTF NAME EXPECT [ARGS...]
run_payload() {
    btf=$1
    name=$2
    expect=$3
    shift 3
    output=/tmp/payload-output

    echo "DNSGATE-VM-PAYLOAD-BEGIN: $name btf=$btf"
    set -o pipefail
    (cd /tmp && DNSGATE_VM_KERNEL_BTF=$btf "/payload/$name" "$@" < /dev/null 2>&1) | tee "$output"
    status=$?
    set +o pipefail

    verdict=fail
    case $expect in
        success)
            [ "$status" -eq 0 ] && verdict=pass
            ;;
        verifier-rejects)
            # The program must fail to load, and the failure must carry the
            # verifier's log, not some other error.
            if [ "$status" -ne 0 ] && grep -Eq "$verifier_summary" "$output"; then
                verdict=pass
            fi
            ;;
    esac
    [ "$verdict" = pass ] || result=fail
    echo "DNSGATE-VM-PAYLOAD-END: $name btf=$btf exit=$status verdict=$verdict"
}

# Routers usually run kernels without BTF. When this kernel has it, every
# payload runs twice: once with BTF, once with /sys/kernel/btf covered by an
# empty tmpfs so loaders find none.
if [ -e /sys/kernel/btf/vmlinux ]; then
    passes="present hidden"
else
    passes="absent"
fi

for btf in $passes; do
    if [ "$btf" = hidden ]; then
        if ! mount -t tmpfs -o ro tmpfs /sys/kernel/btf; then
            setup_failed "hide /sys/kernel/btf"
            continue
        fi
    fi
    while read -r name expect args; do
        [ -n "$name" ] || continue
        # $args is split into words on purpose; the host allows no
        # whitespace or shell syntax inside one argument.
        run_payload "$btf" "$name" "$expect" $args
    done < "$CONFIG/payloads"
done

finish
