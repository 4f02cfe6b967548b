/* SPDX-License-Identifier: MIT */
/*
 * The subset of IGT's public API (igt_core.h, drmtest.h, ioctl_wrappers.h)
 * the vsvm tests use, implemented here because IGT's headers and sources
 * are not installable on the build machine (Debian ships IGT as binaries
 * only). The tests include "igt.h" as IGT's own tests do and build
 * unchanged against IGT itself; this layer exists only to build them here.
 *
 * What it keeps of IGT: the control-flow blocks (igt_main, igt_fixture,
 * igt_subtest, igt_subtest_with_dynamic, igt_dynamic, igt_subtest_group),
 * the assertion and requirement macros, igt_fork/igt_waitchildren, and the
 * command-line protocol IGT's runner drives: --list-subtests,
 * --run-subtest, --dynamic-subtest, the "Starting subtest: NAME" and
 * "Subtest NAME: RESULT (TIME)" lines and the exit codes below.
 */
#ifndef IGT_H
#define IGT_H

#include <errno.h>
#include <getopt.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define IGT_EXIT_SUCCESS 0
#define IGT_EXIT_SKIP 77
#define IGT_EXIT_INVALID 79
#define IGT_EXIT_FAILURE 98
#define IGT_EXIT_ABORT 112

#define __igt_tokencat2(x, y) x##y
#define igt_tokencat(x, y) __igt_tokencat2(x, y)

#define ARRAY_SIZE(arr) (sizeof(arr) / sizeof(arr[0]))

/* --- control flow ------------------------------------------------------ */

extern sigjmp_buf igt_subtest_jmpbuf;
extern sigjmp_buf igt_dynamic_jmpbuf;

typedef int (*igt_opt_handler_t)(int opt, int opt_index, void *data);
#define IGT_OPT_HANDLER_SUCCESS 0
#define IGT_OPT_HANDLER_ERROR -2

int igt_subtest_init_parse_opts(int *argc, char **argv, const char *extra_short_opts,
				const struct option *extra_long_opts, const char *help_str,
				igt_opt_handler_t extra_opt_handler, void *handler_data);

bool __igt_fixture(void);
void __igt_fixture_complete(void);
bool __igt_run_subtest(const char *name, const char *file, int line);
bool __igt_enter_dynamic_container(void);
bool __igt_run_dynamic_subtest(const char *name);
void __igt_subtest_group_save(int *save, int *desc);
void __igt_subtest_group_restore(int save, int desc);

#define igt_main_args(short_opts, long_opts, help_str, opt_handler, handler_data) \
	static void igt_tokencat(__real_main, __LINE__)(void);                      \
	int main(int argc, char **argv)                                             \
	{                                                                           \
		igt_subtest_init_parse_opts(&argc, argv, short_opts, long_opts,     \
					    help_str, opt_handler, handler_data);   \
		igt_tokencat(__real_main, __LINE__)();                              \
		igt_exit();                                                         \
	}                                                                           \
	static void igt_tokencat(__real_main, __LINE__)(void)

#define igt_main igt_main_args(NULL, NULL, NULL, NULL, NULL)

#define igt_fixture                                                            \
	for (volatile int igt_tokencat(__tmpint, __LINE__) = 0;                \
	     igt_tokencat(__tmpint, __LINE__) < 1 && __igt_fixture() &&        \
	     sigsetjmp(igt_subtest_jmpbuf, 1) == 0;                            \
	     igt_tokencat(__tmpint, __LINE__)++, __igt_fixture_complete())

#define igt_subtest(name)                                                      \
	for (; __igt_run_subtest((name), __FILE__, __LINE__) &&                \
	       sigsetjmp(igt_subtest_jmpbuf, 1) == 0;                          \
	     igt_success())

#define __igt_subtest_f(tmp, format...)                                        \
	for (char tmp[256]; snprintf(tmp, sizeof(tmp), format),                \
	     __igt_run_subtest(tmp, __FILE__, __LINE__) &&                     \
	     sigsetjmp(igt_subtest_jmpbuf, 1) == 0;                            \
	     igt_success())
#define igt_subtest_f(f...) __igt_subtest_f(igt_tokencat(__tmpchar, __LINE__), f)

#define igt_subtest_with_dynamic(name)                                         \
	for (; __igt_run_subtest((name), __FILE__, __LINE__) &&                \
	       __igt_enter_dynamic_container() &&                              \
	       sigsetjmp(igt_subtest_jmpbuf, 1) == 0;                          \
	     igt_success())

#define igt_dynamic(name)                                                      \
	for (; __igt_run_dynamic_subtest(name) &&                              \
	       sigsetjmp(igt_dynamic_jmpbuf, 1) == 0;                          \
	     igt_success())

#define __igt_dynamic_f(tmp, format...)                                        \
	for (char tmp[256]; snprintf(tmp, sizeof(tmp), format),                \
	     __igt_run_dynamic_subtest(tmp) &&                                 \
	     sigsetjmp(igt_dynamic_jmpbuf, 1) == 0;                            \
	     igt_success())
#define igt_dynamic_f(f...) __igt_dynamic_f(igt_tokencat(__tmpchar, __LINE__), f)

#define igt_subtest_group                                                      \
	for (int igt_tokencat(__tmpint, __LINE__) = 0,                         \
		 igt_tokencat(__save, __LINE__) = 0,                           \
		 igt_tokencat(__desc, __LINE__) = 0;                           \
	     igt_tokencat(__tmpint, __LINE__) < 1 &&                           \
	     (__igt_subtest_group_save(&igt_tokencat(__save, __LINE__),        \
				       &igt_tokencat(__desc, __LINE__)),       \
	      true);                                                           \
	     igt_tokencat(__tmpint, __LINE__)++,                               \
	     __igt_subtest_group_restore(igt_tokencat(__save, __LINE__),       \
					 igt_tokencat(__desc, __LINE__)))

#define IGT_TEST_DESCRIPTION(str) const char *__igt_test_description = str
void igt_describe_f(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define igt_describe(dsc) igt_describe_f("%s", dsc)

const char *igt_subtest_name(void);
bool igt_only_list_subtests(void);

/* --- results ----------------------------------------------------------- */

void igt_success(void);
void igt_skip(const char *f, ...) __attribute__((format(printf, 1, 2), noreturn));
void __igt_skip_check(const char *file, int line, const char *func, const char *check,
		      const char *f, ...) __attribute__((format(printf, 5, 6), noreturn));
void igt_fail(int exitcode) __attribute__((noreturn));
void __igt_fail_assert(const char *file, int line, const char *func, const char *assertion,
		       const char *f, ...) __attribute__((format(printf, 5, 6), noreturn));
void igt_exit(void) __attribute__((noreturn));

#define igt_require(expr)                                                      \
	do {                                                                   \
		if (!(expr))                                                   \
			__igt_skip_check(__FILE__, __LINE__, __func__, #expr, NULL); \
	} while (0)
#define igt_require_f(expr, f...)                                              \
	do {                                                                   \
		if (!(expr))                                                   \
			__igt_skip_check(__FILE__, __LINE__, __func__, #expr, f); \
	} while (0)
#define igt_skip_on(expr) igt_require(!(expr))
#define igt_skip_on_f(expr, f...) igt_require_f(!(expr), f)

#define igt_assert(expr)                                                       \
	do {                                                                   \
		if (!(expr))                                                   \
			__igt_fail_assert(__FILE__, __LINE__, __func__, #expr, NULL); \
	} while (0)
#define igt_assert_f(expr, f...)                                               \
	do {                                                                   \
		if (!(expr))                                                   \
			__igt_fail_assert(__FILE__, __LINE__, __func__, #expr, f); \
	} while (0)
#define igt_fail_on(expr) igt_assert(!(expr))
#define igt_fail_on_f(expr, f...) igt_assert_f(!(expr), f)

#define __igt_assert_cmp(type, fmt, n1, cmp, ncmp, n2)                         \
	do {                                                                   \
		type __n1 = (n1), __n2 = (n2);                                 \
		if (!(__n1 cmp __n2))                                          \
			__igt_fail_assert(__FILE__, __LINE__, __func__,        \
					  #n1 " " #cmp " " #n2,                \
					  "error: " fmt " " #ncmp " " fmt "\n", \
					  __n1, __n2);                         \
	} while (0)
#define igt_assert_cmpint(n1, cmp, ncmp, n2) __igt_assert_cmp(int, "%d", n1, cmp, ncmp, n2)
#define igt_assert_cmpuint(n1, cmp, ncmp, n2) __igt_assert_cmp(uint32_t, "%#x", n1, cmp, ncmp, n2)
#define igt_assert_cmps64(n1, cmp, ncmp, n2) \
	__igt_assert_cmp(long long, "%lld", n1, cmp, ncmp, n2)
#define igt_assert_cmpu64(n1, cmp, ncmp, n2) \
	__igt_assert_cmp(unsigned long long, "%#llx", n1, cmp, ncmp, n2)

#define igt_assert_eq(n1, n2) igt_assert_cmpint(n1, ==, !=, n2)
#define igt_assert_neq(n1, n2) igt_assert_cmpint(n1, !=, ==, n2)
#define igt_assert_lt(n1, n2) igt_assert_cmpint(n1, <, >=, n2)
#define igt_assert_lte(n1, n2) igt_assert_cmpint(n1, <=, >, n2)
#define igt_assert_eq_u32(n1, n2) igt_assert_cmpuint(n1, ==, !=, n2)
#define igt_assert_eq_s64(n1, n2) igt_assert_cmps64(n1, ==, !=, n2)
#define igt_assert_eq_u64(n1, n2) igt_assert_cmpu64(n1, ==, !=, n2)
#define igt_assert_lte_u64(n1, n2) igt_assert_cmpu64(n1, <=, >, n2)
#define igt_assert_lt_u64(n1, n2) igt_assert_cmpu64(n1, <, >=, n2)

/* --- logging ----------------------------------------------------------- */

void igt_info(const char *f, ...) __attribute__((format(printf, 1, 2)));
void igt_debug(const char *f, ...) __attribute__((format(printf, 1, 2)));
void igt_warn(const char *f, ...) __attribute__((format(printf, 1, 2)));
void igt_critical(const char *f, ...) __attribute__((format(printf, 1, 2)));

/* --- processes and time ------------------------------------------------ */

bool __igt_fork(void);
int __igt_waitchildren(void);
void igt_waitchildren(void);

/*
 * igt_fork - Runs the block in @num_children forked processes, @child the
 * index of each. A failure in a child fails the test once it is waited for
 * with igt_waitchildren().
 */
#define igt_fork(child, num_children)                                          \
	for (int child = 0; child < (num_children); child++)                   \
		for (; __igt_fork(); exit(0))

/*
 * igt_fork_helper - Runs the block in a forked helper process, which
 * igt_wait_helper() joins and igt_stop_helper() kills (SIGKILL if
 * @proc->use_SIGKILL, else SIGTERM; the test fails if it was gone already).
 */
struct igt_helper_process {
	bool running;
	bool use_SIGKILL;
	pid_t pid;
	int id;
};

bool __igt_fork_helper(struct igt_helper_process *proc);
int igt_wait_helper(struct igt_helper_process *proc);
void igt_stop_helper(struct igt_helper_process *proc);

#define igt_fork_helper(proc) for (; __igt_fork_helper(proc); exit(0))

int igt_gettime(struct timespec *ts);
double igt_time_elapsed(struct timespec *then, struct timespec *now);
uint64_t igt_nsec_elapsed(struct timespec *start);

/* igt_seconds_elapsed - igt_nsec_elapsed() in (about 7% long) seconds. */
static inline uint32_t igt_seconds_elapsed(struct timespec *start)
{
	return igt_nsec_elapsed(start) >> 30;
}

/* igt_until_timeout - Runs the block repeatedly for @timeout seconds. */
#define igt_until_timeout(timeout)                                             \
	for (struct timespec t__ = {}; igt_seconds_elapsed(&t__) < (timeout);)

/* --- igt_sizes.h ------------------------------------------------------- */

#define SZ_4K 0x00001000
#define SZ_64K 0x00010000
#define SZ_2M 0x00200000

/* --- drmtest.h and ioctl_wrappers.h ------------------------------------ */

/* As lib/drmtest.h defines it with tests/igt/upstream's patch. */
#define DRIVER_VSVM (1 << 11)

int drm_open_driver(int chipset);
int drm_open_driver_render(int chipset);
int __drm_open_driver_another(int idx, int chipset);
int drm_close_driver(int fd);

int igt_ioctl(int fd, unsigned long request, void *arg);

#define do_ioctl(fd, ioc, ioc_data)                                            \
	do {                                                                   \
		igt_assert_eq(igt_ioctl((fd), (ioc), (ioc_data)), 0);          \
		errno = 0;                                                     \
	} while (0)
#define do_ioctl_err(fd, ioc, ioc_data, err)                                   \
	do {                                                                   \
		igt_assert_eq(igt_ioctl((fd), (ioc), (ioc_data)), -1);         \
		igt_assert_eq(errno, err);                                     \
		errno = 0;                                                     \
	} while (0)

#endif
