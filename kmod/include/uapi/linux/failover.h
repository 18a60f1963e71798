/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * oneframe failover: the values of seed 004 [0066]-[0077], shared by the kernel module
 * failover.ko, libfo and the daemon. This header is a stable contract: values never change.
 */
#ifndef _UAPI_LINUX_FAILOVER_H
#define _UAPI_LINUX_FAILOVER_H

#include <linux/types.h>

/* failover_type, [0066] */
enum fo_type {
	FOTYPE_UNDEF = 0,
	FOTYPE_MASTER = 1,
	FOTYPE_SLAVE = 2,
};

/* failover_state, [0067] */
enum fo_state {
	FOSTATE_UNDEF = 0,
	FOSTATE_LIVE = 1,
	FOSTATE_FAILED = 2,
	FOSTATE_SYNCING = 3,
	FOSTATE_SYNCED = 4,
	FOSTATE_NOPARTNER = 5,
	FOSTATE_NONE = 6,
};

#endif /* _UAPI_LINUX_FAILOVER_H */
