// SPDX-License-Identifier: GPL-2.0

#include <linux/memremap.h>
#include <linux/mm.h>

__rust_helper bool rust_helper_is_device_private_page(const struct page *page)
{
	return is_device_private_page(page);
}

__rust_helper struct dev_pagemap *rust_helper_page_pgmap(const struct page *page)
{
	return page_pgmap(page);
}

__rust_helper void *rust_helper_page_zone_device_data(const struct page *page)
{
	return folio_zone_device_data(page_folio(page));
}

__rust_helper void rust_helper_page_set_zone_device_data(struct page *page,
							 void *data)
{
	folio_set_zone_device_data(page_folio(page), data);
}

__rust_helper int rust_helper_numa_node_id(void)
{
	return numa_node_id();
}
