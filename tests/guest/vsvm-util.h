/* SPDX-License-Identifier: GPL-2.0 */
/* What the vsvm guest programs share. */
#ifndef VSVM_UTIL_H
#define VSVM_UTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <limits.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <drm/drm.h>

/* Opens the render node of the nth vsvm device (from 0); -1 if there is none. */
static int vsvm_open(int nth)
{
	char path[300], name[32];
	struct dirent *e;
	DIR *d = opendir("/dev/dri");
	int found = -1;

	while (d && found < 0 && (e = readdir(d))) {
		struct drm_version v = { .name = name, .name_len = sizeof(name) - 1 };
		int fd;

		if (strncmp(e->d_name, "renderD", 7))
			continue;
		snprintf(path, sizeof(path), "/dev/dri/%s", e->d_name);
		fd = open(path, O_RDWR);
		memset(name, 0, sizeof(name));
		if (fd >= 0 && !ioctl(fd, DRM_IOCTL_VERSION, &v) && !strcmp(name, "vsvm") &&
		    nth-- == 0)
			found = fd;
		else if (fd >= 0)
			close(fd);
	}
	if (d)
		closedir(d);
	return found;
}

/*
 * Writes @value to @knob in the debugfs directory of the device of @fd,
 * vsvm/<device>/ (root only); returns 0, or -1 with errno set.
 */
static inline int vsvm_knob(int fd, const char *knob, const char *value)
{
	char path[PATH_MAX], dev[256];
	const char *name;
	struct stat st;
	ssize_t n;
	int kfd, ret;

	if (fstat(fd, &st))
		return -1;
	snprintf(path, sizeof(path), "/sys/dev/char/%u:%u/device", major(st.st_rdev),
		 minor(st.st_rdev));
	n = readlink(path, dev, sizeof(dev) - 1);
	if (n <= 0)
		return -1;
	dev[n] = 0;
	name = strrchr(dev, '/') ? strrchr(dev, '/') + 1 : dev;
	snprintf(path, sizeof(path), "/sys/kernel/debug/vsvm/%s/%s", name, knob);
	kfd = open(path, O_WRONLY);
	if (kfd < 0)
		return -1;
	ret = write(kfd, value, strlen(value)) == (ssize_t)strlen(value) ? 0 : -1;
	close(kfd);
	return ret;
}

/*
 * Makes the next @times operations of the device's fault @fault (fail_alloc,
 * fail_copy, partial_migration, delay_fault) fail, through its
 * fault-injection knobs; 0 stops it. Returns 0 or -1.
 */
static inline int vsvm_fail(int fd, const char *fault, int times)
{
	const char *knobs[][2] = {
		{ "verbose", "0" },
		{ "interval", "1" },
		{ "probability", times ? "100" : "0" },
		{ "times", NULL },
	};
	char knob[64], n[16];
	unsigned int i;

	snprintf(n, sizeof(n), "%d", times);
	knobs[3][1] = n;
	for (i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++) {
		snprintf(knob, sizeof(knob), "%s/%s", fault, knobs[i][0]);
		if (vsvm_knob(fd, knob, knobs[i][1]))
			return -1;
	}
	return 0;
}

#endif
