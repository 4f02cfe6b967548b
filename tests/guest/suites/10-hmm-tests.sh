#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The peer suite: the kernel's own mm/hmm-tests against the built-in
# lib/test_hmm, device-private and device-coherent variants. Results other
# than "ok" must be listed in /hmm-tests.exceptions with their reason.

# shellcheck source=/dev/null # the guest side of tests/guest/lib.sh
. /lib.sh

tap=/tmp/hmm-tests.tap

# Prints the expected result (skip or fail) of test $1, if it is listed.
exception() {
	grep -v -e '^#' -e '^$' /hmm-tests.exceptions | {
		while read -r pattern result _reason; do
			# shellcheck disable=SC2254
			case "$1" in $pattern) echo "$result" && exit 0 ;; esac
		done
	}
}

# benchmark_thp_migration is a benchmark, not a test.
hmm-tests -T benchmark_thp_migration >$tap 2>&1
rc=$?
cat $tap

plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' $tap | head -1)
pass=0 fail=0 skip=0 known=0 seen=0
while read -r line; do
	case "$line" in
	"ok "* | "not ok "*) ;;
	*) continue ;;
	esac
	seen=$((seen + 1))
	name=$(echo "$line" | sed 's/^\(not \)*ok [0-9]* \([^ ]*\).*/\2/')
	expected=$(exception "$name")
	case "$line:$expected" in
	"ok "*"# SKIP"*:skip)
		skip=$((skip + 1))
		result "hmm-tests@$name" skip "listed in hmm-tests.exceptions"
		;;
	"ok "*"# SKIP"*:*)
		echo "svm: hmm-tests: unexpected skip: $line"
		fail=$((fail + 1))
		result "hmm-tests@$name" fail "unexpected skip"
		;;
	"ok "*:fail)
		echo "svm: hmm-tests: known failure passed, update the exceptions: $name"
		pass=$((pass + 1))
		result "hmm-tests@$name" pass
		;;
	"ok "*)
		pass=$((pass + 1))
		result "hmm-tests@$name" pass
		;;
	"not ok "*:fail)
		echo "svm: hmm-tests: known failure: $name"
		known=$((known + 1))
		result "hmm-tests@$name" skip "known failure, see hmm-tests.exceptions"
		;;
	*)
		echo "svm: hmm-tests: $line"
		fail=$((fail + 1))
		result "hmm-tests@$name" fail
		;;
	esac
done <$tap

note=""
[ "$known" -eq 0 ] || note="$known known failure(s)"
if [ -z "$plan" ] || [ "$seen" -ne "$plan" ]; then
	note="ran $seen of ${plan:-?} planned, exit $rc"
	fail=$((fail + 1))
fi
echo "SVM-SUITE hmm-tests pass=$pass fail=$fail skip=$((skip + known)) $note"
