/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The one table of legal (failover_type, failover_state) moves of seed 004 Fig. 5, compiled
 * into failover.ko and into libfo's userspace backend, so that the two cannot disagree.
 * Plain C, no allocation, usable from the kernel and from C++.
 *
 * States: the nine of Fig. 5 ([0069]-[0077]), "Unconfigured" (UNDEF, UNDEF) where a server
 * starts before set_config_type, and FOSTATE_FAILED with the types SLAVE and UNDEF:
 * [0067] defines FOSTATE_FAILED as "not operational" for any server, so a secondary or an
 * unconfigured server whose critical process dies is marked failed too. Fig. 5 itself only
 * shows the primary's Failed 582.
 *
 * Every state except the failed ones has an edge to (same type, FOSTATE_FAILED): the kernel
 * takes that edge when a critical process dies ([0094]). A failed server leaves that state
 * only by set_config_type (repair, then re-designation as in [0063]).
 *
 * The event names which command or event of the text takes the edge; the daemon's
 * command-level state machine decides which edge a command takes (for example start_streaming
 * goes to Primary or Primary_No_Secondary depending on whether the partner is online, [0086]).
 */
#ifndef _UAPI_LINUX_FAILOVER_FSM_H
#define _UAPI_LINUX_FAILOVER_FSM_H

#include "failover.h"

enum fo_fsm_event {
	FO_EV_SET_CONFIG_TYPE = 1,	/* [0079] [0081] designate primary, secondary or neither */
	FO_EV_START_STREAMING = 2,	/* [0080] [0086] */
	FO_EV_STOP_STREAMING = 3,	/* [0088] */
	FO_EV_FAILOVER_SYNC = 4,	/* [0082] */
	FO_EV_SYNC_DONE = 5,		/* [0082] synchronization succeeded */
	FO_EV_SYNC_FAILED = 6,		/* [0082] synchronization failed */
	FO_EV_FAILOVER_UNSYNC = 7,	/* [0085] */
	FO_EV_PARTNER_ONLINE = 8,	/* [0086] [0088] */
	FO_EV_PARTNER_OFFLINE = 9,	/* [0088] */
	FO_EV_TAKEOVER = 10,		/* [0098] the secondary becomes primary on a failure */
	FO_EV_FAIL = 11,		/* [0094] [0095] local failure, critical process death */
};

struct fo_fsm_edge {
	unsigned char from_type;
	unsigned char from_state;
	unsigned char to_type;
	unsigned char to_state;
	unsigned char event;
};

#define FO_E(ft, fs, tt, ts, ev) \
	{ FOTYPE_##ft, FOSTATE_##fs, FOTYPE_##tt, FOSTATE_##ts, FO_EV_##ev }

static const struct fo_fsm_edge fo_fsm_edges[] = {
	/* Unconfigured */
	FO_E(UNDEF, UNDEF, MASTER, NONE, SET_CONFIG_TYPE),
	FO_E(UNDEF, UNDEF, SLAVE, NONE, SET_CONFIG_TYPE),
	FO_E(UNDEF, UNDEF, UNDEF, FAILED, FAIL),
	/* Primary_Offline 580 */
	FO_E(MASTER, NONE, MASTER, NOPARTNER, START_STREAMING),
	FO_E(MASTER, NONE, MASTER, LIVE, START_STREAMING),	/* secondary already up, [0089] */
	FO_E(MASTER, NONE, SLAVE, NONE, SET_CONFIG_TYPE),
	FO_E(MASTER, NONE, UNDEF, UNDEF, SET_CONFIG_TYPE),
	FO_E(MASTER, NONE, MASTER, FAILED, FAIL),
	/* Primary_No_Secondary 500B */
	FO_E(MASTER, NOPARTNER, MASTER, LIVE, PARTNER_ONLINE),
	FO_E(MASTER, NOPARTNER, MASTER, NONE, STOP_STREAMING),
	FO_E(MASTER, NOPARTNER, MASTER, FAILED, FAIL),
	/* Primary 500A */
	FO_E(MASTER, LIVE, MASTER, NOPARTNER, PARTNER_OFFLINE),
	FO_E(MASTER, LIVE, MASTER, NONE, STOP_STREAMING),
	FO_E(MASTER, LIVE, MASTER, FAILED, FAIL),
	/* Failed 582 */
	FO_E(MASTER, FAILED, MASTER, NONE, SET_CONFIG_TYPE),
	FO_E(MASTER, FAILED, SLAVE, NONE, SET_CONFIG_TYPE),
	FO_E(MASTER, FAILED, UNDEF, UNDEF, SET_CONFIG_TYPE),
	/* Secondary_Offline 584 */
	FO_E(SLAVE, NONE, SLAVE, SYNCING, FAILOVER_SYNC),
	FO_E(SLAVE, NONE, MASTER, NONE, SET_CONFIG_TYPE),
	FO_E(SLAVE, NONE, UNDEF, UNDEF, SET_CONFIG_TYPE),
	FO_E(SLAVE, NONE, SLAVE, FAILED, FAIL),
	/* Secondary_Synchronizing 586 */
	FO_E(SLAVE, SYNCING, SLAVE, SYNCED, SYNC_DONE),
	FO_E(SLAVE, SYNCING, SLAVE, NONE, SYNC_FAILED),
	FO_E(SLAVE, SYNCING, SLAVE, FAILED, FAIL),
	/* Secondary_Synchronized 588 */
	FO_E(SLAVE, SYNCED, SLAVE, NONE, FAILOVER_UNSYNC),
	FO_E(SLAVE, SYNCED, SLAVE, LIVE, START_STREAMING),
	FO_E(SLAVE, SYNCED, SLAVE, NOPARTNER, START_STREAMING),
	FO_E(SLAVE, SYNCED, SLAVE, FAILED, FAIL),
	/* Secondary 540A */
	FO_E(SLAVE, LIVE, SLAVE, NOPARTNER, PARTNER_OFFLINE),
	FO_E(SLAVE, LIVE, MASTER, NOPARTNER, TAKEOVER),
	FO_E(SLAVE, LIVE, SLAVE, SYNCED, STOP_STREAMING),	/* offline, still in sync, [0084] */
	FO_E(SLAVE, LIVE, SLAVE, FAILED, FAIL),
	/* Secondary_No_Primary 540B */
	FO_E(SLAVE, NOPARTNER, SLAVE, LIVE, PARTNER_ONLINE),
	FO_E(SLAVE, NOPARTNER, SLAVE, SYNCED, STOP_STREAMING),
	FO_E(SLAVE, NOPARTNER, SLAVE, FAILED, FAIL),
	/* a failed secondary or unconfigured server: only set_config_type */
	FO_E(SLAVE, FAILED, SLAVE, NONE, SET_CONFIG_TYPE),
	FO_E(SLAVE, FAILED, MASTER, NONE, SET_CONFIG_TYPE),
	FO_E(SLAVE, FAILED, UNDEF, UNDEF, SET_CONFIG_TYPE),
	FO_E(UNDEF, FAILED, MASTER, NONE, SET_CONFIG_TYPE),
	FO_E(UNDEF, FAILED, SLAVE, NONE, SET_CONFIG_TYPE),
	FO_E(UNDEF, FAILED, UNDEF, UNDEF, SET_CONFIG_TYPE),
	{ 0, 0, 0, 0, 0 }	/* end: event 0 */
};

#undef FO_E

/* The Fig. 5 name of a (type, state) pair, or NULL if the pair is not a state of the table. */
static inline const char *fo_fsm_state_name(unsigned int type, unsigned int state)
{
	switch (type * 16 + state) {
	case FOTYPE_UNDEF * 16 + FOSTATE_UNDEF:		return "Unconfigured";
	case FOTYPE_UNDEF * 16 + FOSTATE_FAILED:	return "Unconfigured_Failed";
	case FOTYPE_MASTER * 16 + FOSTATE_LIVE:		return "Primary";
	case FOTYPE_MASTER * 16 + FOSTATE_NONE:		return "Primary_Offline";
	case FOTYPE_MASTER * 16 + FOSTATE_NOPARTNER:	return "Primary_No_Secondary";
	case FOTYPE_MASTER * 16 + FOSTATE_FAILED:	return "Failed";
	case FOTYPE_SLAVE * 16 + FOSTATE_LIVE:		return "Secondary";
	case FOTYPE_SLAVE * 16 + FOSTATE_NONE:		return "Secondary_Offline";
	case FOTYPE_SLAVE * 16 + FOSTATE_SYNCING:	return "Secondary_Synchronizing";
	case FOTYPE_SLAVE * 16 + FOSTATE_SYNCED:	return "Secondary_Synchronized";
	case FOTYPE_SLAVE * 16 + FOSTATE_NOPARTNER:	return "Secondary_No_Primary";
	case FOTYPE_SLAVE * 16 + FOSTATE_FAILED:	return "Secondary_Failed";
	default:					return 0;
	}
}

/* The edge from (ft, fs) to (tt, ts), or NULL if Fig. 5 does not allow that move. */
static inline const struct fo_fsm_edge *fo_fsm_find(unsigned int ft, unsigned int fs,
						    unsigned int tt, unsigned int ts)
{
	const struct fo_fsm_edge *e;

	for (e = fo_fsm_edges; e->event; e++) {
		if (e->from_type == ft && e->from_state == fs &&
		    e->to_type == tt && e->to_state == ts)
			return e;
	}
	return 0;
}

#endif /* _UAPI_LINUX_FAILOVER_FSM_H */
