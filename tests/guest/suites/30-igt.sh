#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The IGT-style vsvm tests, driven as IGT's runner drives them: the subtests
# from --list-subtests, each run in a process of its own with --run-subtest,
# its result taken from the "Subtest NAME: RESULT" and "Dynamic subtest NAME:
# RESULT" lines (dynamic subtests count on their own, as igt@bin@sub@dyn),
# and the exit status checked against the result (0, 77 skip, 98 fail). A
# subtest without a result line, or killed by the timeout, failed. After
# each binary, every device's VRAM must be free again.

# shellcheck source=/dev/null # the guest side of tests/guest/lib.sh
. /lib.sh

TIMEOUT=600

# svm.igt=BINARY[:SUBTEST-GLOB[:ARGS]] on the kernel command line selects
# one binary, its subtests and extra arguments (commas for spaces).
only='' only_sub='*' args=''
# shellcheck disable=SC2013 # the command line is one line of words
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	svm.igt=*)
		IFS=: read -r only only_sub args <<-EOF
			${arg#svm.igt=}
		EOF
		only_sub=${only_sub:-*} args=$(echo "$args" | tr , ' ')
		;;
	esac
done

# Checks the result lines and exit status $2 of subtest $1 of binary
# $name, whose output is in $3; prints a result line per (dynamic) subtest
# and adds to the counters.
judge() {
	sub=$1 rc=$2 out=$3
	dynamic=$(grep -c '^Dynamic subtest ' "$out")
	res=$(sed -n "s/^Subtest $sub: \([A-Z]*\) (\(.*\))\$/\1 \2/p" "$out" | tail -n 1)
	# shellcheck disable=SC2086 # result word and time
	set -- $res
	verdict=${1:-NONE} time=${2:-}
	want=
	case "$verdict" in
	SUCCESS) want=0 ;;
	SKIP) want=77 ;;
	FAIL) want=98 ;;
	esac
	problem=
	if [ -z "$want" ]; then
		problem="no result (${verdict}, exit $rc)"
	elif [ "$rc" != "$want" ]; then
		problem="$verdict but exit $rc"
	fi
	grep '^Dynamic subtest ' "$out" | sed 's/^Dynamic subtest \([^:]*\): \([A-Z]*\) (\(.*\))$/\1 \2 \3/' |
		while read -r dyn r t; do
			case "$r" in
			SUCCESS) result "igt@$name@$sub@$dyn" pass "$t" ;;
			SKIP) result "igt@$name@$sub@$dyn" skip "$(skip_reason "$out")" ;;
			*) result "igt@$name@$sub@$dyn" fail "$r $t" ;;
			esac
		done
	pass=$((pass + $(grep -c '^Dynamic subtest .*: SUCCESS' "$out")))
	skip=$((skip + $(grep -c '^Dynamic subtest .*: SKIP' "$out")))
	fail=$((fail + $(grep '^Dynamic subtest ' "$out" | grep -c -v -e ': SUCCESS' -e ': SKIP')))
	if [ "$verdict" = FAIL ] && grep -q '^Dynamic subtest .*: FAIL' "$out"; then
		# The failed dynamic subtests are counted above; show why.
		echo "svm: igt@$name@$sub: dynamic subtests failed"
		tail -n 40 "$out" | sed 's/^/    /'
	fi
	if [ -n "$problem" ] ||
		{ [ "$verdict" = FAIL ] && ! grep -q '^Dynamic subtest .*: FAIL' "$out"; }; then
		fail=$((fail + 1))
		echo "svm: igt@$name@$sub: FAIL ${problem:-$time}"
		tail -n 40 "$out" | sed 's/^/    /'
		result "igt@$name@$sub" fail "${problem:-$verdict}"
	elif [ "$dynamic" != 0 ]; then
		# The dynamic subtests are the results; the parent only sums them.
		:
	elif [ "$verdict" = SKIP ]; then
		skip=$((skip + 1))
		echo "svm: igt@$name@$sub: SKIP: $(skip_reason "$out")"
		result "igt@$name@$sub" skip "$(skip_reason "$out")"
	else
		pass=$((pass + 1))
		result "igt@$name@$sub" pass "$time"
	fi
}

# The reason a skipped test printed: its last line that is not a
# protocol line.
skip_reason() {
	grep -v -e '^Starting ' -e '^Subtest ' -e '^Dynamic subtest ' -e '^IGT-Version' \
		-e '^Test requirement not met' "$1" | tail -n 1
}

while read -r name; do
	bin=/igt/$name
	[ -z "$only" ] || [ "$only" = "$name" ] || continue
	pass=0 fail=0 skip=0 note=
	if ! subtests=$("$bin" --list-subtests) || [ -z "$subtests" ]; then
		echo "SVM-SUITE $name pass=0 fail=1 skip=0 --list-subtests failed"
		continue
	fi
	for sub in $subtests; do
		# shellcheck disable=SC2254 # a glob from the command line
		case "$sub" in $only_sub) ;; *) continue ;; esac
		out=/tmp/$name-$sub.out
		# shellcheck disable=SC2086 # extra arguments, split
		timeout -s KILL "$TIMEOUT" "$bin" --run-subtest "$sub" $args >"$out" 2>&1 </dev/null
		judge "$sub" $? "$out"
		# What the stress run reports: operations done and mismatches.
		grep '^vsvm: ' "$out"
	done
	released=$(vram_released)
	echo "$released"
	if echo "$released" | grep -q '^not ok'; then
		fail=$((fail + 1))
		note="VRAM left in use"
		result "igt@$name@vram-released" fail "$released"
	fi
	# An unknown subtest is an invalid request (exit 79), not a skip.
	"$bin" --run-subtest no-such-subtest >/dev/null 2>&1
	rc=$?
	if [ "$rc" != 79 ]; then
		fail=$((fail + 1))
		note="$note unknown subtest exit $rc, not 79"
	fi
	echo "SVM-SUITE $name pass=$pass fail=$fail skip=$skip $note"
done </igt/test-list.txt
