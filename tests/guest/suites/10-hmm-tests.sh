#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The peer suites: the kernel's own mm/hmm-tests, unmodified, against the C
# lib/test_hmm (hmm-tests: the peer that proves the guest), then against its
# Rust twin lib/test_hmm_rust (hmm-tests-rust: the Rust abstractions and
# the GPU SVM layer under a suite nobody on this project wrote), each with
# its device-private and device-coherent variants. Results other than "ok"
# must be listed in /<suite>.exceptions with their reason. Between the runs
# each module is unloaded and loaded again.

# shellcheck source=/dev/null # the guest side of tests/guest/lib.sh
. /lib.sh

# exception FILE TEST: prints the expected result (skip or fail) of TEST, if
# FILE lists it.
exception() {
	grep -v -e '^#' -e '^$' "$1" | {
		while read -r pattern result _reason; do
			# shellcheck disable=SC2254
			case "$2" in $pattern) echo "$result" && exit 0 ;; esac
		done
	}
}

# run SUITE: runs hmm-tests against the test_hmm module loaded now and
# reports it as SUITE, with the exceptions of /SUITE.exceptions.
run() {
	suite=$1
	tap=/tmp/$suite.tap
	# benchmark_thp_migration is a benchmark, not a test.
	hmm-tests -T benchmark_thp_migration >"$tap" 2>&1
	rc=$?
	cat "$tap"

	plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "$tap" | head -1)
	pass=0 fail=0 skip=0 known=0 seen=0
	while read -r line; do
		case "$line" in
		"ok "* | "not ok "*) ;;
		*) continue ;;
		esac
		seen=$((seen + 1))
		name=$(echo "$line" | sed 's/^\(not \)*ok [0-9]* \([^ ]*\).*/\2/')
		expected=$(exception "/$suite.exceptions" "$name")
		case "$line:$expected" in
		"ok "*"# SKIP"*:skip)
			skip=$((skip + 1))
			result "$suite@$name" skip "listed in $suite.exceptions"
			;;
		"ok "*"# SKIP"*:*)
			echo "svm: $suite: unexpected skip: $line"
			fail=$((fail + 1))
			result "$suite@$name" fail "unexpected skip"
			;;
		"ok "*:fail)
			echo "svm: $suite: known failure passed, update the exceptions: $name"
			pass=$((pass + 1))
			result "$suite@$name" pass
			;;
		"ok "*)
			pass=$((pass + 1))
			result "$suite@$name" pass
			;;
		"not ok "*:fail)
			echo "svm: $suite: known failure: $name"
			known=$((known + 1))
			result "$suite@$name" skip "known failure, see $suite.exceptions"
			;;
		*)
			echo "svm: $suite: $line"
			fail=$((fail + 1))
			result "$suite@$name" fail
			;;
		esac
	done <"$tap"

	note=""
	[ "$known" -eq 0 ] || note="$known known failure(s)"
	if [ -z "$plan" ] || [ "$seen" -ne "$plan" ]; then
		note="ran $seen of ${plan:-?} planned, exit $rc"
		fail=$((fail + 1))
	fi
	echo "SVM-SUITE $suite pass=$pass fail=$fail skip=$((skip + known)) $note"
}

# check SUITE NAME COMMAND...: a check of the module swap, as a test of SUITE.
check() {
	suite=$1 name=$2
	shift 2
	if "$@"; then
		result "$suite@$name" pass
		echo "ok - $name" >>"/tmp/$suite.checks"
	else
		result "$suite@$name" fail
		echo "not ok - $name" >>"/tmp/$suite.checks"
	fi
}

# Whether the dmesg since mark $1 has no complaint of device memory left in
# use when a device's memory went away.
memory_released() {
	! dmesg | sed -n "/svm-mark $1/,\$p" | grep -q 'device pages still in use'
}

run hmm-tests

: >/tmp/modules.checks
echo "svm-mark rust" >/dev/kmsg
check modules "test_hmm unloads" rmmod test_hmm
check modules "test_hmm_rust loads" module_load test_hmm_rust
if [ -d /sys/module/test_hmm_rust ]; then
	run hmm-tests-rust
	check modules "test_hmm_rust unloads" rmmod test_hmm_rust
	check modules "test_hmm_rust released all device memory" memory_released rust
fi
check modules "test_hmm loads again" module_load test_hmm
cat /tmp/modules.checks
pass=$(grep -c '^ok' /tmp/modules.checks)
fail=$(grep -c '^not ok' /tmp/modules.checks)
echo "SVM-SUITE hmm-modules pass=$pass fail=$fail skip=0"
