#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The vsvm programs as suites: each "ok - " / "not ok - " line counts; a
# crash, or an exit status that disagrees with the lines, is a failure.
# After each program, every device's VRAM must be free again (debugfs).

# shellcheck source=/dev/null # the guest side of tests/guest/lib.sh
. /lib.sh

# Runs program $2 as suite $1.
tap_suite() {
	out=/tmp/$1.out
	"$2" >"$out" 2>&1
	rc=$?
	vram_released >>"$out"
	cat "$out"
	n=0
	grep -E '^(not )?ok - ' "$out" | while read -r line; do
		n=$((n + 1))
		case "$line" in
		ok*) result "$1@$n" pass "${line#ok - }" ;;
		*) result "$1@$n" fail "${line#not ok - }" ;;
		esac
	done
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
