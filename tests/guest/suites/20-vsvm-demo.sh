#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The vsvm demo as a suite: each of its checks counts; a crash or an exit
# status that disagrees with its checks is a failure.

out=/tmp/vsvm-demo.out
vsvm-demo >$out 2>&1
rc=$?
cat $out

pass=$(grep -c '^ok - ' $out)
fail=$(grep -c '^not ok - ' $out)
note=""
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
	note="exit $rc"
	fail=1
fi
if ! grep -q '^vsvm: demo passed$' $out && [ "$fail" -eq 0 ]; then
	note="did not finish"
	fail=1
fi
echo "SVM-SUITE vsvm-demo pass=$pass fail=$fail skip=0 $note"
