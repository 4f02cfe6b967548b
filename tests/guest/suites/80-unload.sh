#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Unloading vsvm while processes still use it: refused while a file is
# open; with only VRAM pages left in a process, or a job running for a
# process that exited, it completes and the pages come back to the
# process. The console check fails the run on any splat (a callback into
# the freed module would oops). The module is loaded again at the end.

# shellcheck source=/dev/null # the guest side of tests/guest/lib.sh
. /lib.sh

out=/tmp/unload.out
: >"$out"

# tap OK DESCRIPTION
tap() {
	if [ "$1" = 0 ]; then
		echo "ok - $2" >>"$out"
	else
		echo "not ok - $2" >>"$out"
	fi
}

# Starts "vsvm-unload MODE" in the background and waits until it is ready
# (its output in /tmp/MODE.out); sets $holder to its pid.
start() {
	vsvm-unload "$1" >"/tmp/$1.out" 2>&1 &
	holder=$!
	for _ in $(seq 1 120); do
		grep -q '^ready$' "/tmp/$1.out" && return 0
		kill -0 "$holder" 2>/dev/null || break
		sleep 1
	done
	return 1
}

# Signals the holder, waits for it and keeps its TAP lines.
finish() {
	kill -USR1 "$holder"
	wait "$holder"
	rc=$?
	grep -E '^(not )?ok - ' "/tmp/$1.out" | sed "s/ - / - $1: /" >>"$out"
	tap "$rc" "$1: the process exits cleanly"
}

if [ ! -d /sys/module/vsvm ] || [ ! -f /lib/modules/vsvm.ko ]; then
	result unload fail "vsvm is not a loaded module"
	echo "SVM-SUITE unload pass=0 fail=1 skip=0 vsvm is not a loaded module"
	exit 0
fi

start hold-fd
tap $? "hold-fd: the buffer is in VRAM and the file open"
rmmod vsvm 2>/dev/null
tap $((!$?)) "hold-fd: rmmod is refused while a file is open"
loaded=1
[ -d /sys/module/vsvm ] && loaded=0
tap "$loaded" "hold-fd: the module is still loaded"
finish hold-fd

start hold-pages
tap $? "hold-pages: the buffer is in VRAM, the file closed"
rmmod vsvm
tap $? "hold-pages: rmmod succeeds with VRAM pages left in a process"
gone=1
[ -d /sys/module/vsvm ] || gone=0
tap "$gone" "hold-pages: the module is gone"
finish hold-pages

module_load vsvm
tap $? "the module loads again"
vsvm-unload async-job >/tmp/async-job.out 2>&1
tap $? "async-job: the process queued a job and exited"
rmmod vsvm
tap $? "async-job: rmmod succeeds right after the process exits"

module_load vsvm
tap $? "the module loads again"
vsvm-unload smoke >>"$out" 2>&1
tap $? "smoke: the reloaded driver works"
vram_released >>"$out"

cat "$out"
tap_report unload "$out"
