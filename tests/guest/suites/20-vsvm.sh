#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The vsvm programs as suites: each "ok - " / "not ok - " line of theirs
# counts; a crash, or an exit status that disagrees with the lines, is a
# failure.

# Runs program $2 as suite $1.
tap_suite() {
	out=/tmp/$1.out
	"$2" >"$out" 2>&1
	rc=$?
	cat "$out"
	pass=$(grep -c '^ok - ' "$out")
	fail=$(grep -c '^not ok - ' "$out")
	note=""
	if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
		note="exit $rc"
		fail=1
	fi
	if [ "$rc" -eq 0 ] && [ "$pass" -eq 0 ]; then
		note="no result"
		fail=1
	fi
	echo "SVM-SUITE $1 pass=$pass fail=$fail skip=0 $note"
}

tap_suite vsvm-demo vsvm-demo
tap_suite vsvm-fuzz vsvm-fuzz
