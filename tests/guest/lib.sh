# SPDX-License-Identifier: GPL-2.0
# Shared by the guest suites (sourced). Result lines for the host:
#   SVM-RESULT <test> <pass|fail|skip> [detail]   one per test, for results.json
#   SVM-SUITE <name> pass=N fail=N skip=N [note]  one per suite, for the totals

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
