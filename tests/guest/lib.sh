# SPDX-License-Identifier: GPL-2.0
# Shared by the guest suites (sourced). Result lines for the host:
#   SVM-RESULT <test> <pass|fail|skip> [detail]   one per test, for results.json
#   SVM-SUITE <name> pass=N fail=N skip=N [note]  one per suite, for the totals

# Loads module $1 from /lib/modules with the $1.* parameters of the kernel
# command line, as modprobe would. The init loads vsvm and test_hmm at boot;
# the hmm-tests suite swaps test_hmm for test_hmm_rust and back.
module_load() {
	# shellcheck disable=SC2046 # one argument per parameter
	insmod "/lib/modules/$1.ko" $(tr ' ' '\n' </proc/cmdline | sed -n "s/^$1\.//p")
}

# result TEST RESULT [DETAIL]
result() {
	echo "SVM-RESULT $*"
}

# Prints a TAP line for each vsvm device: no VRAM left in use once the
# programs that used it are gone.
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

# Reports the TAP lines ("ok - " / "not ok - ") of file $2 as suite $1: a
# result line per test and the suite line. A non-zero exit status $3 of the
# program with no failed test counts as a failure.
tap_report() {
	n=0
	grep -E '^(not )?ok - ' "$2" | while read -r line; do
		n=$((n + 1))
		case "$line" in
		ok*) result "$1@$n" pass "${line#ok - }" ;;
		*) result "$1@$n" fail "${line#not ok - }" ;;
		esac
	done
	pass=$(grep -c '^ok - ' "$2")
	fail=$(grep -c '^not ok - ' "$2")
	note=""
	if [ "${3:-0}" -ne 0 ] && [ "$fail" -eq 0 ]; then
		note="exit $3"
		fail=1
	fi
	echo "SVM-SUITE $1 pass=$pass fail=$fail skip=0 $note"
}
