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

/*
 * The data of a device folio, private or coherent: folio_zone_device_data()
 * warns for anything but device-private folios.
 */
__rust_helper void *rust_helper_page_zone_device_data(const struct page *page)
{
	return page_folio(page)->page.zone_device_data;
}

__rust_helper void rust_helper_page_set_zone_device_data(struct page *page,
							 void *data)
{
	page_folio(page)->page.zone_device_data = data;
}

__rust_helper int rust_helper_numa_node_id(void)
{
	return numa_node_id();
}

__rust_helper struct folio *rust_helper_page_folio(struct page *page)
{
	return page_folio(page);
}

__rust_helper unsigned int rust_helper_folio_order(const struct folio *folio)
{
	return folio_order(folio);
}

__rust_helper void rust_helper_zone_device_folio_init(struct folio *folio,
						      struct dev_pagemap *pgmap,
						      unsigned int order)
{
	zone_device_folio_init(folio, pgmap, order);
}

/*
 * For a folio_split callback: what the core does itself to a folio cut from
 * a device-private folio when the pagemap has no folio_split callback
 * (zone_device_private_split_cb()).
 */
__rust_helper void rust_helper_zone_device_folio_split_init(struct folio *head,
							    struct folio *tail)
{
	tail->pgmap = head->pgmap;
	tail->page.mapping = head->page.mapping;
}

__rust_helper bool rust_helper_is_device_coherent_page(const struct page *page)
{
	return is_device_coherent_page(page);
}
