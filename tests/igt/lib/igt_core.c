// SPDX-License-Identifier: MIT
/*
 * The IGT subset of igt.h: subtests, results, forks and IGT's command-line
 * protocol. Behaviour follows IGT's igt_core.c as its runner sees it:
 *
 *   --list-subtests            the subtest names, one per line, exit 0
 *   --run-subtest GLOB[,GLOB]  only the matching subtests; exit 79 if none
 *   --dynamic-subtest GLOB     only the matching dynamic subtests
 *
 * Per subtest: "Starting subtest: NAME", then "Subtest NAME: SUCCESS|FAIL|
 * SKIP|CRASH (SECONDS)"; dynamic subtests likewise with "dynamic subtest".
 * Exit status: 98 if any subtest failed, else 0 if any passed, else 77.
 * A skip or failure in a fixture skips or fails every later subtest of its
 * group. Each start is also written to /dev/kmsg so that the kernel log
 * shows which subtest ran before a splat.
 */
#include <fcntl.h>
#include <fnmatch.h>
#include <signal.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "igt.h"

sigjmp_buf igt_subtest_jmpbuf;
sigjmp_buf igt_dynamic_jmpbuf;
extern const char *__igt_test_description __attribute__((weak));

static const char *command;
static bool list_subtests, describe_subtests;
/* The description of the next subtest, and those of the groups around it. */
static char *description;
static char *group_descriptions[16];
static int group_depth;
static char *run_pattern, *dynamic_pattern;

static char subtest[256], dynamic[256];
static struct timespec subtest_start, dynamic_start;
static bool in_fixture, in_container, dynamic_ran, dynamic_failed;
/* IGT_EXIT_SKIP or IGT_EXIT_FAILURE once a fixture of this group gave up. */
static int skip_subtests_henceforth;
static bool any_matched, any_success, any_failure;

static bool in_child;
static pid_t children[256];
static int num_children;

/* --- logging ----------------------------------------------------------- */

static void vlog(FILE *out, const char *prefix, const char *f, va_list ap)
{
	if (!f)
		return;
	if (prefix)
		fprintf(out, "(%s:%d) %s: ", command, getpid(), prefix);
	vfprintf(out, f, ap);
	fflush(out);
}

#define DEFINE_LOG(name, out, prefix)                   \
	void name(const char *f, ...)                  \
	{                                              \
		va_list ap;                            \
		va_start(ap, f);                       \
		vlog(out, prefix, f, ap);              \
		va_end(ap);                            \
	}
DEFINE_LOG(igt_info, stdout, NULL)
DEFINE_LOG(igt_warn, stderr, "WARNING")
DEFINE_LOG(igt_critical, stderr, "CRITICAL")

void igt_debug(const char *f, ...)
{
	va_list ap;

	if (!getenv("IGT_LOG_LEVEL") || strcmp(getenv("IGT_LOG_LEVEL"), "debug"))
		return;
	va_start(ap, f);
	vlog(stdout, "DEBUG", f, ap);
	va_end(ap);
}

/* Marks a step in the kernel log, as IGT does; failures do not matter. */
static void log_to_kernel(const char *what, const char *name)
{
	char line[512];
	int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	snprintf(line, sizeof(line), "<6>[IGT] %s: %s %s\n", command, what, name);
	if (write(fd, line, strlen(line)) < 0)
		errno = 0;
	close(fd);
}

/* --- time -------------------------------------------------------------- */

int igt_gettime(struct timespec *ts)
{
	return clock_gettime(CLOCK_MONOTONIC, ts) ? -errno : 0;
}

double igt_time_elapsed(struct timespec *then, struct timespec *now)
{
	return (double)(now->tv_sec - then->tv_sec) + (double)(now->tv_nsec - then->tv_nsec) / 1e9;
}

uint64_t igt_nsec_elapsed(struct timespec *start)
{
	struct timespec now;

	igt_gettime(&now);
	if (!start->tv_sec && !start->tv_nsec) {
		*start = now;
		return 0;
	}
	return (uint64_t)(igt_time_elapsed(start, &now) * 1e9);
}

static double seconds_since(struct timespec *start)
{
	struct timespec now;

	igt_gettime(&now);
	return igt_time_elapsed(start, &now);
}

/* --- children ---------------------------------------------------------- */

/* Forks; returns 0 in the child, which has no children of its own. */
static pid_t fork_child(void)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		__igt_fail_assert(__FILE__, __LINE__, __func__, "fork()", "%s\n", strerror(errno));
	if (pid == 0) {
		in_child = true;
		num_children = 0;
	}
	return pid;
}

bool __igt_fork(void)
{
	pid_t pid;

	if (in_child || num_children == (int)ARRAY_SIZE(children))
		__igt_fail_assert(__FILE__, __LINE__, __func__, "igt_fork",
				  "nested igt_fork or too many children\n");
	pid = fork_child();
	if (pid)
		children[num_children++] = pid;
	return !pid;
}

/* Waits for every child; returns the number that did not exit with 0. */
int __igt_waitchildren(void)
{
	int failed = 0, status, i;

	for (i = 0; i < num_children; i++) {
		while (waitpid(children[i], &status, 0) < 0 && errno == EINTR)
			;
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			continue;
		failed++;
		if (WIFSIGNALED(status))
			igt_critical("child %d died with signal %d\n", i, WTERMSIG(status));
		else
			igt_critical("child %d exited with status %d\n", i, WEXITSTATUS(status));
	}
	num_children = 0;
	return failed;
}

void igt_waitchildren(void)
{
	if (__igt_waitchildren())
		igt_fail(IGT_EXIT_FAILURE);
}

bool __igt_fork_helper(struct igt_helper_process *proc)
{
	pid_t pid = fork_child();

	if (pid) {
		proc->running = true;
		proc->pid = pid;
	}
	return !pid;
}

int igt_wait_helper(struct igt_helper_process *proc)
{
	int status = 0;

	while (waitpid(proc->pid, &status, 0) < 0 && errno == EINTR)
		;
	proc->running = false;
	return status;
}

void igt_stop_helper(struct igt_helper_process *proc)
{
	int sig = proc->use_SIGKILL ? SIGKILL : SIGTERM;
	int status;

	if (!proc->running)
		return;
	kill(proc->pid, sig);
	status = igt_wait_helper(proc);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != sig)
		__igt_fail_assert(__FILE__, __LINE__, __func__, "helper was alive",
				  "helper died too early with status %d\n", status);
}

/* A subtest that ends early takes its children with it. */
static void kill_children(void)
{
	int i;

	for (i = 0; i < num_children; i++)
		kill(children[i], SIGKILL);
	for (i = 0; i < num_children; i++)
		waitpid(children[i], NULL, 0);
	num_children = 0;
}

/* --- subtests ---------------------------------------------------------- */

static bool matches(const char *patterns, const char *name)
{
	char copy[1024], *save, *p;

	if (!patterns)
		return true;
	snprintf(copy, sizeof(copy), "%s", patterns);
	for (p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save))
		if (!fnmatch(p, name, 0))
			return true;
	return false;
}

static void valid_name(const char *name)
{
	const char *c;

	for (c = name; *c; c++) {
		if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		    (*c >= '0' && *c <= '9') || *c == '-' || *c == '_')
			continue;
		fprintf(stderr, "invalid subtest name \"%s\"\n", name);
		exit(IGT_EXIT_INVALID);
	}
}

static void record(const char *result)
{
	if (!strcmp(result, "SUCCESS"))
		any_success = true;
	else if (strcmp(result, "SKIP"))
		any_failure = true;
}

/* Ends the current dynamic subtest, subtest or fixture with @result. */
static void __attribute__((noreturn)) exit_subtest(const char *result)
{
	if (in_child)
		exit(!strcmp(result, "SUCCESS") ? 0 :
		     !strcmp(result, "SKIP") ? IGT_EXIT_SKIP : IGT_EXIT_FAILURE);
	kill_children();
	if (dynamic[0]) {
		printf("Dynamic subtest %s: %s (%.3fs)\n", dynamic, result,
		       seconds_since(&dynamic_start));
		fflush(stdout);
		dynamic_failed |= strcmp(result, "SUCCESS") && strcmp(result, "SKIP");
		dynamic[0] = 0;
		siglongjmp(igt_dynamic_jmpbuf, 1);
	}
	if (in_fixture) {
		any_failure |= strcmp(result, "SKIP") != 0;
		skip_subtests_henceforth = strcmp(result, "SKIP") ? IGT_EXIT_FAILURE :
							      IGT_EXIT_SKIP;
		in_fixture = false;
		siglongjmp(igt_subtest_jmpbuf, 1);
	}
	if (!subtest[0]) {
		/* Outside of any subtest: the whole binary ends here. */
		exit(!strcmp(result, "SKIP") ? IGT_EXIT_SKIP : IGT_EXIT_FAILURE);
	}
	if (in_container) {
		if (dynamic_failed) {
			result = "FAIL";
		} else if (!strcmp(result, "SUCCESS") && !dynamic_ran) {
			igt_info("No dynamic tests executed.\n");
			result = "SKIP";
		}
		in_container = false;
	}
	record(result);
	printf("Subtest %s: %s (%.3fs)\n", subtest, result, seconds_since(&subtest_start));
	fflush(stdout);
	log_to_kernel("finished subtest", subtest);
	subtest[0] = 0;
	siglongjmp(igt_subtest_jmpbuf, 1);
}

bool __igt_fixture(void)
{
	if (list_subtests || skip_subtests_henceforth)
		return false;
	in_fixture = true;
	return true;
}

void __igt_fixture_complete(void)
{
	in_fixture = false;
}

/* Prints the descriptions of subtest @name as IGT's --describe does. */
static void describe(const char *name, const char *file, int line)
{
	bool documented = false;
	int i;

	printf("SUB %s %s:%d:\n", name, file, line);
	for (i = 0; i < group_depth; i++) {
		if (group_descriptions[i]) {
			printf("  %s\n\n", group_descriptions[i]);
			documented = true;
		}
	}
	if (description) {
		printf("  %s\n\n", description);
		documented = true;
	}
	if (!documented)
		printf("  NO DOCUMENTATION!\n\n");
}

static bool select_subtest(const char *name, const char *file, int line)
{
	valid_name(name);
	if (describe_subtests) {
		describe(name, file, line);
		return false;
	}
	if (list_subtests) {
		printf("%s\n", name);
		return false;
	}
	if (!matches(run_pattern, name))
		return false;
	any_matched = true;
	printf("Starting subtest: %s\n", name);
	if (skip_subtests_henceforth) {
		const char *result = skip_subtests_henceforth == IGT_EXIT_SKIP ? "SKIP" : "FAIL";

		record(result);
		printf("Subtest %s: %s (0.000s)\n", name, result);
		fflush(stdout);
		return false;
	}
	fflush(stdout);
	log_to_kernel("starting subtest", name);
	snprintf(subtest, sizeof(subtest), "%s", name);
	igt_gettime(&subtest_start);
	return true;
}

bool __igt_run_subtest(const char *name, const char *file, int line)
{
	bool run = select_subtest(name, file, line);

	/* A description covers the next subtest only. */
	free(description);
	description = NULL;
	return run;
}

bool __igt_enter_dynamic_container(void)
{
	in_container = true;
	dynamic_ran = false;
	dynamic_failed = false;
	return true;
}

bool __igt_run_dynamic_subtest(const char *name)
{
	if (!in_container)
		__igt_fail_assert(__FILE__, __LINE__, __func__, "igt_dynamic",
				  "igt_dynamic outside igt_subtest_with_dynamic\n");
	valid_name(name);
	if (!matches(dynamic_pattern, name))
		return false;
	printf("Starting dynamic subtest: %s\n", name);
	fflush(stdout);
	log_to_kernel("starting dynamic subtest", name);
	snprintf(dynamic, sizeof(dynamic), "%s", name);
	dynamic_ran = true;
	igt_gettime(&dynamic_start);
	return true;
}

/* A description before a group covers all its subtests. */
void __igt_subtest_group_save(int *save, int *desc)
{
	*save = skip_subtests_henceforth;
	*desc = group_depth;
	if (group_depth < (int)ARRAY_SIZE(group_descriptions))
		group_descriptions[group_depth] = description;
	else
		free(description);
	description = NULL;
	group_depth++;
}

void __igt_subtest_group_restore(int save, int desc)
{
	skip_subtests_henceforth = save;
	while (group_depth > desc) {
		group_depth--;
		if (group_depth < (int)ARRAY_SIZE(group_descriptions)) {
			free(group_descriptions[group_depth]);
			group_descriptions[group_depth] = NULL;
		}
	}
}

void igt_describe_f(const char *fmt, ...)
{
	va_list ap;

	free(description);
	va_start(ap, fmt);
	if (vasprintf(&description, fmt, ap) < 0)
		description = NULL;
	va_end(ap);
}

const char *igt_subtest_name(void)
{
	return subtest[0] ? subtest : NULL;
}

bool igt_only_list_subtests(void)
{
	return list_subtests;
}

/* --- results ----------------------------------------------------------- */

void igt_success(void)
{
	exit_subtest("SUCCESS");
}

static void __attribute__((noreturn)) vskip(const char *f, va_list ap)
{
	vlog(stdout, NULL, f, ap);
	exit_subtest("SKIP");
}

void igt_skip(const char *f, ...)
{
	va_list ap;

	va_start(ap, f);
	vskip(f, ap);
}

void __igt_skip_check(const char *file, int line, const char *func, const char *check,
		      const char *f, ...)
{
	va_list ap;

	igt_info("Test requirement not met in function %s, file %s:%d:\n", func, file, line);
	igt_info("Test requirement: %s\n", check);
	va_start(ap, f);
	vskip(f, ap);
}

void igt_fail(int exitcode)
{
	(void)exitcode;
	exit_subtest("FAIL");
}

void __igt_fail_assert(const char *file, int line, const char *func, const char *assertion,
		       const char *f, ...)
{
	int err = errno;
	va_list ap;

	igt_critical("Test assertion failure function %s, file %s:%d:\n", func, file, line);
	igt_critical("Failed assertion: %s\n", assertion);
	if (err)
		igt_critical("Last errno: %d, %s\n", err, strerror(err));
	va_start(ap, f);
	vlog(stderr, "CRITICAL", f, ap);
	va_end(ap);
	igt_fail(IGT_EXIT_FAILURE);
}

void igt_exit(void)
{
	fflush(stdout);
	if (list_subtests)
		exit(IGT_EXIT_SUCCESS);
	if (run_pattern && !any_matched) {
		fprintf(stderr, "%s: no subtest matches \"%s\"\n", command, run_pattern);
		exit(IGT_EXIT_INVALID);
	}
	exit(any_failure ? IGT_EXIT_FAILURE : any_success ? IGT_EXIT_SUCCESS : IGT_EXIT_SKIP);
}

/* A crash in a subtest is reported as its result before the process dies. */
static void crash_handler(int sig)
{
	char line[512];
	int n;

	if (subtest[0] && !in_child) {
		n = snprintf(line, sizeof(line), "Received signal %d.\nSubtest %s: CRASH (%.3fs)\n",
			     sig, subtest, seconds_since(&subtest_start));
		if (write(STDOUT_FILENO, line, n) < 0)
			errno = 0;
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

/* --- command line ------------------------------------------------------ */

enum { OPT_LIST = 500, OPT_DESCRIBE, OPT_RUN, OPT_DYNAMIC, OPT_HELP };

static void usage(const char *help_str, FILE *out)
{
	fprintf(out, "Usage: %s [OPTIONS]\n"
		"  --list-subtests\n"
		"  --describe\n"
		"  --run-subtest <pattern>\n"
		"  --dynamic-subtest <pattern>\n"
		"  --help-description\n"
		"  --help|-h\n", command);
	if (help_str)
		fprintf(out, "%s\n", help_str);
}

int igt_subtest_init_parse_opts(int *argc, char **argv, const char *extra_short_opts,
				const struct option *extra_long_opts, const char *help_str,
				igt_opt_handler_t extra_opt_handler, void *handler_data)
{
	static const struct option core[] = {
		{ "list-subtests", no_argument, NULL, OPT_LIST },
		{ "describe", no_argument, NULL, OPT_DESCRIBE },
		{ "run-subtest", required_argument, NULL, OPT_RUN },
		{ "dynamic-subtest", required_argument, NULL, OPT_DYNAMIC },
		{ "help-description", no_argument, NULL, OPT_HELP },
		{ "help", no_argument, NULL, 'h' },
	};
	struct option opts[64] = {};
	char short_opts[64];
	struct utsname u;
	int n = 0, i, c, index;
	static const int signals[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };

	command = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	for (i = 0; i < (int)ARRAY_SIZE(core); i++)
		opts[n++] = core[i];
	for (i = 0; extra_long_opts && extra_long_opts[i].name && n < 63; i++)
		opts[n++] = extra_long_opts[i];
	snprintf(short_opts, sizeof(short_opts), "h%s", extra_short_opts ? extra_short_opts : "");

	while ((c = getopt_long(*argc, argv, short_opts, opts, &index)) != -1) {
		switch (c) {
		case OPT_LIST:
			list_subtests = true;
			break;
		case OPT_DESCRIBE:
			list_subtests = true;
			describe_subtests = true;
			break;
		case OPT_RUN:
			run_pattern = strdup(optarg);
			break;
		case OPT_DYNAMIC:
			dynamic_pattern = strdup(optarg);
			break;
		case OPT_HELP:
			printf("%s\n", &__igt_test_description ? __igt_test_description : "");
			exit(IGT_EXIT_SUCCESS);
		case 'h':
			usage(help_str, stdout);
			exit(IGT_EXIT_SUCCESS);
		default:
			if (c != '?' && extra_opt_handler &&
			    extra_opt_handler(c, index, handler_data) == IGT_OPT_HANDLER_SUCCESS)
				break;
			usage(help_str, stderr);
			exit(IGT_EXIT_INVALID);
		}
	}
	if (list_subtests)
		return 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	uname(&u);
	printf("IGT-Version: 1.30-vsvm-compat (%s) (Linux: %s %s)\n", u.machine, u.release,
	       u.machine);
	for (i = 0; i < (int)ARRAY_SIZE(signals); i++)
		signal(signals[i], crash_handler);
	return 0;
}
