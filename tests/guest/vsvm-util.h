/* SPDX-License-Identifier: GPL-2.0 */
/* What the vsvm guest programs share. */
#ifndef VSVM_UTIL_H
#define VSVM_UTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
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

#endif
