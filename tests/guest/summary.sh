#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# What the SVM stack of this kernel offers (scripts/svm run).

cfg() { zcat /proc/config.gz | grep -q "^$1=y" && echo yes || echo no; }

echo "svm: kernel $(uname -r) on $(uname -m), $(grep -c ^processor /proc/cpuinfo) CPUs, $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) MiB"
echo "svm: Rust: CONFIG_RUST=$(cfg CONFIG_RUST); Rust code ran at boot: $(dmesg | grep -q 'Rust minimal sample (init)' && echo yes || echo no)"
echo "svm: device memory: ZONE_DEVICE=$(cfg CONFIG_ZONE_DEVICE) DEVICE_PRIVATE=$(cfg CONFIG_DEVICE_PRIVATE) MIGRATION=$(cfg CONFIG_MIGRATION) HMM_MIRROR=$(cfg CONFIG_HMM_MIRROR) MMU_NOTIFIER=$(cfg CONFIG_MMU_NOTIFIER)"
echo "svm: DRM: $(cfg CONFIG_DRM); vsvm: $(cfg CONFIG_DRM_VSVM), render nodes: $(cd /dev/dri 2>/dev/null && echo renderD*)"
echo "svm: THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled); huge pages reserved: $(cat /proc/sys/vm/nr_hugepages)"
regions=$(grep -c hmm_dmirror /proc/iomem)
devices=$(find /dev -name 'hmm_dmirror*' | sort)
coherent=$(echo "$devices" | grep -c -e 'hmm_dmirror2' -e 'hmm_dmirror3')
echo "svm: HMM peer (lib/test_hmm): devices $(echo "$devices" | tr '\n' ' '); device-private regions in /proc/iomem: $regions; device-coherent devices: $coherent"
if ! hmm-demo; then
	echo "SVM-RUN failed: hmm demo"
elif ! vsvm-demo; then
	echo "SVM-RUN failed: vsvm demo"
else
	echo "SVM-RUN ok"
fi
