#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Memory leaked by everything that ran before: two kmemleak scans (an
# object is reported once it stayed unreferenced across scans and is older
# than five seconds); every report fails the run. The init cleared what
# the boot itself left behind.

# shellcheck source=/dev/null # the guest side of tests/guest/lib.sh
. /lib.sh

f=/sys/kernel/debug/kmemleak
if [ ! -w "$f" ]; then
	result kmemleak fail "no $f"
	echo "SVM-SUITE kmemleak pass=0 fail=1 skip=0 no kmemleak in this kernel"
	exit 0
fi
sleep 6
echo scan >"$f"
echo scan >"$f"
leaks=$(grep -c '^unreferenced object' "$f")
if [ "$leaks" = 0 ]; then
	result kmemleak pass
	echo "SVM-SUITE kmemleak pass=1 fail=0 skip=0"
else
	echo "svm: kmemleak: $leaks unreferenced objects:"
	head -n 60 "$f" | sed 's/^/    /'
	result kmemleak fail "$leaks unreferenced objects"
	echo "SVM-SUITE kmemleak pass=0 fail=1 skip=0 $leaks leaks"
fi
