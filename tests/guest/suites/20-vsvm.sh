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
	tap_report "$1" "$out" "$rc"
}

tap_suite vsvm-demo vsvm-demo
tap_suite vsvm-fuzz vsvm-fuzz
