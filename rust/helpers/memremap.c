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
