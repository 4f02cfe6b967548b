// SPDX-License-Identifier: GPL-2.0

#include <linux/migrate.h>
#include <linux/mm.h>
#include <linux/pagemap.h>

__rust_helper struct page *rust_helper_pfn_to_page(unsigned long pfn)
{
	return pfn_to_page(pfn);
}

__rust_helper unsigned long rust_helper_page_to_pfn(const struct page *page)
{
	return page_to_pfn(page);
}

__rust_helper struct page *rust_helper_folio_page(struct folio *folio,
						  unsigned long n)
{
	return folio_page(folio, n);
}

__rust_helper bool rust_helper_is_zone_device_page(const struct page *page)
{
	return is_zone_device_page(page);
}

__rust_helper void rust_helper_lock_page(struct page *page)
{
	lock_page(page);
}

__rust_helper void rust_helper_put_page(struct page *page)
{
	put_page(page);
}

__rust_helper void rust_helper_folio_put(struct folio *folio)
{
	folio_put(folio);
}

__rust_helper struct folio *rust_helper_folio_alloc(gfp_t gfp, unsigned int order)
{
	return folio_alloc(gfp, order);
}
