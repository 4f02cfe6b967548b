// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-demo: a short device-private migration round trip through lib/test_hmm,
 * shown by `scripts/svm run`. Migrates an anonymous buffer to the simulated
 * device memory, checks with a snapshot that the CPU page tables now point at
 * device-private pages, touches the buffer from the CPU (migrate_to_ram) and
 * checks the data and that the pages are back in system memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <lib/test_hmm_uapi.h>

#define NPAGES 256

static int count_device_pages(int fd, void *buf, size_t page)
{
	unsigned char prot[NPAGES];
	struct hmm_dmirror_cmd cmd = {
		.addr = (uintptr_t)buf,
		.ptr = (uintptr_t)prot,
		.npages = NPAGES,
	};
	int i, n = 0;

	if (ioctl(fd, HMM_DMIRROR_SNAPSHOT, &cmd))
		return -errno;
	for (i = 0; i < NPAGES; i++)
		n += (prot[i] & 0xf0) == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;
	return n;
}

int main(void)
{
	size_t page = sysconf(_SC_PAGESIZE), size = NPAGES * page;
	struct hmm_dmirror_cmd cmd = { 0 };
	unsigned long *buf, *mirror, i, bad = 0;
	int fd, ndev;

	fd = open("/dev/hmm_dmirror0", O_RDWR);
	if (fd < 0) {
		printf("svm: hmm demo: cannot open /dev/hmm_dmirror0: %s\n", strerror(errno));
		return 1;
	}
	buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	mirror = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED || mirror == MAP_FAILED)
		return 1;
	for (i = 0; i < size / sizeof(*buf); i++)
		buf[i] = i ^ 0x5eed;

	cmd.addr = (uintptr_t)buf;
	cmd.ptr = (uintptr_t)mirror;
	cmd.npages = NPAGES;
	if (ioctl(fd, HMM_DMIRROR_MIGRATE_TO_DEV, &cmd)) {
		printf("svm: hmm demo: MIGRATE_TO_DEV failed: %s\n", strerror(errno));
		return 1;
	}
	ndev = count_device_pages(fd, buf, page);
	printf("svm: hmm demo: migrated %llu of %d pages to device-private memory; ",
	       (unsigned long long)cmd.cpages, NPAGES);
	printf("snapshot: %d device pages\n", ndev);

	/* CPU reads: each page faults and migrate_to_ram brings it back. */
	for (i = 0; i < size / sizeof(*buf); i++)
		bad += buf[i] != (i ^ 0x5eed) || mirror[i] != (i ^ 0x5eed);
	ndev = count_device_pages(fd, buf, page);
	printf("svm: hmm demo: CPU read back %lu words, %lu wrong; ", size / sizeof(*buf), bad);
	printf("snapshot: %d device pages left\n", ndev);
	close(fd);
	return cmd.cpages == NPAGES && bad == 0 && ndev == 0 ? 0 : 1;
}
