// SPDX-License-Identifier: MIT
/*
 * The drmtest.h and ioctl_wrappers.h part of igt.h: opening a device by its
 * driver. IGT itself finds devices through udev and its driver table; here
 * the device nodes are scanned and matched by the driver name.
 */
#include <dirent.h>
#include <fcntl.h>

#include "drm.h"
#include "igt.h"

static bool wanted(int fd, int chipset)
{
	char name[32] = {};
	struct drm_version v = { .name = name, .name_len = sizeof(name) - 1 };

	if (ioctl(fd, DRM_IOCTL_VERSION, &v))
		return false;
	return (chipset & DRIVER_VSVM) && !strcmp(name, "vsvm");
}

/* Opens the @idx-th device node named @prefix* of a driver of @chipset. */
static int open_node(const char *prefix, int idx, int chipset)
{
	char path[300];
	struct dirent **list;
	int n, i, fd = -1;

	n = scandir("/dev/dri", &list, NULL, alphasort);
	for (i = 0; i < n; i++) {
		if (fd < 0 && !strncmp(list[i]->d_name, prefix, strlen(prefix))) {
			snprintf(path, sizeof(path), "/dev/dri/%s", list[i]->d_name);
			fd = open(path, O_RDWR | O_CLOEXEC);
			if (fd >= 0 && (!wanted(fd, chipset) || idx-- > 0)) {
				close(fd);
				fd = -1;
			}
		}
		free(list[i]);
	}
	if (n >= 0)
		free(list);
	return fd;
}

/* As in IGT: the primary node of the @idx-th device, or -1. */
int __drm_open_driver_another(int idx, int chipset)
{
	return open_node("card", idx, chipset);
}

int drm_open_driver(int chipset)
{
	int fd = __drm_open_driver_another(0, chipset);

	igt_require_f(fd >= 0, "No known gpu found for chipset flags %#x\n", chipset);
	return fd;
}

int drm_open_driver_render(int chipset)
{
	int fd = open_node("renderD", 0, chipset);

	igt_require_f(fd >= 0, "No known gpu found for chipset flags %#x\n", chipset);
	return fd;
}

int drm_close_driver(int fd)
{
	return close(fd);
}

int igt_ioctl(int fd, unsigned long request, void *arg)
{
	int ret;

	do {
		ret = ioctl(fd, request, arg);
	} while (ret == -1 && (errno == EINTR || errno == EAGAIN));
	return ret;
}
