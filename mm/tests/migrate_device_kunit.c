// SPDX-License-Identifier: GPL-2.0-only
/*
 * KUnit tests of migrate_device: migrations of device-private pages by
 * physical page, racing with the processes that map them.
 */
#include <kunit/test.h>
#include <linux/ioport.h>
#include <linux/memremap.h>
#include <linux/migrate.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/rcupdate.h>
#include <linux/uaccess.h>

/* A device with one page of device-private memory. */
struct mdk_device {
	struct dev_pagemap pgmap;
	struct resource *res;
	atomic_t freed;
};

static void mdk_folio_free(struct folio *folio)
{
	struct mdk_device *mdev = container_of(page_pgmap(&folio->page),
					       struct mdk_device, pgmap);

	atomic_inc(&mdev->freed);
}

/* The tests never touch a device page from the CPU. */
static vm_fault_t mdk_migrate_to_ram(struct vm_fault *vmf)
{
	return VM_FAULT_SIGBUS;
}

static const struct dev_pagemap_ops mdk_ops = {
	.folio_free = mdk_folio_free,
	.migrate_to_ram = mdk_migrate_to_ram,
};

static void mdk_device_release(void *data)
{
	struct mdk_device *mdev = data;

	memunmap_pages(&mdev->pgmap);
	release_mem_region(mdev->res->start, resource_size(mdev->res));
}

static struct mdk_device *mdk_device_create(struct kunit *test)
{
	struct mdk_device *mdev;
	void *addr;

	mdev = kunit_kzalloc(test, sizeof(*mdev), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, mdev);
	mdev->res = request_free_mem_region(&iomem_resource, PAGE_SIZE,
					    "migrate_device_kunit");
	KUNIT_ASSERT_FALSE(test, IS_ERR(mdev->res));
	mdev->pgmap.type = MEMORY_DEVICE_PRIVATE;
	mdev->pgmap.range.start = mdev->res->start;
	mdev->pgmap.range.end = mdev->res->end;
	mdev->pgmap.nr_range = 1;
	mdev->pgmap.ops = &mdk_ops;
	mdev->pgmap.owner = mdev;
	addr = memremap_pages(&mdev->pgmap, numa_node_id());
	if (IS_ERR(addr)) {
		release_mem_region(mdev->res->start, resource_size(mdev->res));
		KUNIT_FAIL_AND_ABORT(test, "memremap_pages: %ld", PTR_ERR(addr));
	}
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, mdk_device_release, mdev));
	return mdev;
}

/* Moves the anonymous page at @addr of the test's mm to the device page. */
static void mdk_migrate_to_device(struct kunit *test, struct mdk_device *mdev,
				  unsigned long addr)
{
	unsigned long pfn = PHYS_PFN(mdev->res->start);
	struct mm_struct *mm = current->mm;
	unsigned long src = 0, dst = 0;
	struct migrate_vma args = {
		.start = addr,
		.end = addr + PAGE_SIZE,
		.src = &src,
		.dst = &dst,
		.pgmap_owner = mdev,
		.flags = MIGRATE_VMA_SELECT_SYSTEM,
	};
	struct page *dpage;

	mmap_read_lock(mm);
	args.vma = vma_lookup(mm, addr);
	KUNIT_ASSERT_NOT_NULL(test, args.vma);
	KUNIT_ASSERT_EQ(test, 0, migrate_vma_setup(&args));
	KUNIT_ASSERT_TRUE(test, src & MIGRATE_PFN_MIGRATE);
	/* The device would copy the data here; the tests do not read it back. */
	dpage = pfn_to_page(pfn);
	/* Returns the page locked, as the migration wants it. */
	zone_device_page_init(dpage, &mdev->pgmap, 0);
	dst = migrate_pfn(pfn);
	migrate_vma_pages(&args);
	migrate_vma_finalize(&args);
	mmap_read_unlock(mm);
	KUNIT_ASSERT_TRUE(test, src & MIGRATE_PFN_MIGRATE);
}

/*
 * An eviction by physical page (migrate_device_range()) takes no mmap lock:
 * the process may unmap the page between the unmap step, which replaces the
 * mapping with a migration entry, and finalization, which walks the rmap of
 * the page to remove those entries. The unmap frees the anon_vma of the
 * process unless the migration holds a reference; the walk then reads freed
 * memory (KASAN: slab-use-after-free in rmap_walk_anon()).
 */
static void migrate_device_range_racing_munmap(struct kunit *test)
{
	struct mdk_device *mdev = mdk_device_create(test);
	unsigned long pfn = PHYS_PFN(mdev->res->start);
	unsigned long src = 0, dst = 0;
	struct page *spage;
	unsigned long addr;

	addr = kunit_vm_mmap(test, NULL, 0, PAGE_SIZE, PROT_READ | PROT_WRITE,
			     MAP_ANONYMOUS | MAP_PRIVATE, 0);
	KUNIT_ASSERT_NE_MSG(test, addr, 0, "kunit_vm_mmap failed");
	KUNIT_ASSERT_EQ(test, 0, put_user(0x5a, (u8 __user *)addr));
	mdk_migrate_to_device(test, mdev, addr);

	KUNIT_ASSERT_EQ(test, 0, migrate_device_range(&src, pfn, 1));
	KUNIT_ASSERT_TRUE(test, src & MIGRATE_PFN_MIGRATE);
	/* While the device would copy, the process unmaps its last mapping. */
	KUNIT_ASSERT_EQ(test, 0, vm_munmap(addr, PAGE_SIZE));
	/* Let what the unmap freed be freed for good, for KASAN to see a use. */
	rcu_barrier();

	spage = alloc_page(GFP_HIGHUSER_MOVABLE | __GFP_ZERO);
	KUNIT_ASSERT_NOT_NULL(test, spage);
	lock_page(spage);
	dst = migrate_pfn(page_to_pfn(spage));
	migrate_device_pages(&src, &dst, 1);
	migrate_device_finalize(&src, &dst, 1);

	/* The device page went back to the device, once. */
	KUNIT_EXPECT_EQ(test, atomic_read(&mdev->freed), 1);
}

static struct kunit_case migrate_device_test_cases[] = {
	KUNIT_CASE(migrate_device_range_racing_munmap),
	{}
};

static struct kunit_suite migrate_device_test_suite = {
	.name = "migrate_device",
	.test_cases = migrate_device_test_cases,
};

kunit_test_suite(migrate_device_test_suite);

MODULE_DESCRIPTION("KUnit tests of device page migration");
MODULE_LICENSE("GPL");
