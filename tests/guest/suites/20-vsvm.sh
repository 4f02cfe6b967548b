#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The vsvm programs as suites: each "ok - " / "not ok - " line counts; a
# crash, or an exit status that disagrees with the lines, is a failure.
# After each program, every device's VRAM must be free again (debugfs).

# Prints a result line for each device: no VRAM left in use once the
# program's process is gone.
vram_released() {
	for f in /sys/kernel/debug/vsvm/*/vram; do
		dev=$(basename "$(dirname "$f")")
		# Frees of device memory finish in a work item: give them a moment.
		for _ in 1 2 3 4 5; do
			grep -q '^used_bytes: 0$' "$f" && break
			sleep 1
		done
		used=$(sed -n 's/^used_bytes: //p' "$f")
		allocs=$(sed -n 's/^allocations: //p' "$f")
		releases=$(sed -n 's/^releases: //p' "$f")
		if [ "$used" = 0 ] && [ "$allocs" = "$releases" ]; then
			echo "ok - $dev: all VRAM free again ($allocs allocations released)"
		else
			echo "not ok - $dev: VRAM left in use: $used bytes, $allocs allocations, $releases released"
		fi
	done
}

# Runs program $2 as suite $1.
tap_suite() {
	out=/tmp/$1.out
	"$2" >"$out" 2>&1
	rc=$?
	vram_released >>"$out"
	cat "$out"
	pass=$(grep -c '^ok - ' "$out")
	fail=$(grep -c '^not ok - ' "$out")
	note=""
	if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
		note="exit $rc"
		fail=1
	fi
	echo "SVM-SUITE $1 pass=$pass fail=$fail skip=0 $note"
}

tap_suite vsvm-demo vsvm-demo
tap_suite vsvm-fuzz vsvm-fuzz
