// SPDX-License-Identifier: GPL-2.0

#include <linux/fault-inject.h>

__rust_helper void rust_helper_fault_attr_init(struct fault_attr *attr)
{
	*attr = (struct fault_attr)
#ifdef CONFIG_FAULT_INJECTION
		FAULT_ATTR_INITIALIZER;
#else
		{};
#endif
}
