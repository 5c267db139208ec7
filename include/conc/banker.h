/*
 * conc/banker.h — the banker's algorithm (银行家算法): deadlock avoidance
 * by Dijkstra's banker with Habermann's safety check.
 *
 * A banker manages N resource types, each with a fixed total of units.
 * Every client first declares its maximum claim (conc_banker_claim: how
 * many units of each type it may ever hold at once) and gets a handle;
 * then it requests and releases units through that handle. A request is
 * granted only when the units are available AND the state after granting
 * is safe: there is an order (a safe sequence) in which every client can
 * get the rest of its claim, finish and give everything back. Otherwise
 * the request waits — parking only the calling thread or green thread —
 * until releases make it grantable, its timeout passes, or the waiting
 * green thread is killed / a Timeout scope ends the wait. So clients that
 * stay within their claims never deadlock, whatever order they ask in.
 *
 * Clients are explicit handles, not thread identities: one client may be
 * used by several threads or green threads (calls are serialised inside),
 * and a thread may act for several clients. Waiting requests are served
 * oldest first among those that are safe to grant (a big request does not
 * hold back smaller ones that are safe; it may wait long under a steady
 * stream of them).
 *
 * Ownership: conc_banker_new returns a banker you free with
 * conc_banker_free once every client is gone (conc_banker_unclaim);
 * conc_banker_claim returns a client handle freed by conc_banker_unclaim
 * (which gives back whatever it still holds). Vectors passed in are read
 * during the call only; they have ntypes entries.
 *
 * Timeouts (conc/base.h): conc_banker_request treats a negative timeout as
 * "already up", like Semaphore.acquire: it tries once. 0 tries once,
 * CONC_FOREVER waits as long as it takes, NaN is CONC_EINVAL.
 *
 *     long totals[3] = {10, 5, 7}, max[3] = {7, 5, 3}, want[3] = {0, 1, 0};
 *     conc_banker_t *b; conc_banker_client_t *c;
 *     conc_banker_new(&b, 3, totals);
 *     conc_banker_claim(b, max, &c);
 *     conc_banker_request(c, want, CONC_FOREVER); ... conc_banker_release(c, want);
 */
#ifndef CONC_BANKER_H
#define CONC_BANKER_H

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_banker conc_banker_t;
typedef struct conc_banker_client conc_banker_client_t;

/* Most resource types and most units of one type a banker accepts. */
#define CONC_BANKER_MAX_TYPES 64
#define CONC_BANKER_MAX_UNITS 0x3fffffffL

/* A banker of ntypes resource types (1..CONC_BANKER_MAX_TYPES) with
 * totals[i] units of type i (0..CONC_BANKER_MAX_UNITS). Returns 0 and
 * *out, CONC_EINVAL (NULL, bad counts) or CONC_ENOMEM. */
CONC_API int conc_banker_new(conc_banker_t **out, size_t ntypes, const long *totals);

/* Free b. Returns 0, CONC_EINVAL (NULL) or CONC_EPERM (clients remain:
 * nothing is freed). */
CONC_API int conc_banker_free(conc_banker_t *b);

/* Declare a new client whose maximum claim is max[] (0 <= max[i] <=
 * totals[i]) and return its handle. Clients are numbered in claim order
 * from 0 (conc_banker_client_id); the safety check scans them in that
 * order. Returns 0, CONC_EINVAL (NULL, a claim above the totals or
 * negative) or CONC_ENOMEM. Never blocks. */
CONC_API int conc_banker_claim(conc_banker_t *b, const long *max, conc_banker_client_t **out);

/* The client leaves: what it holds goes back to the banker (waiting
 * requests that became safe are granted) and c is freed. Returns 0,
 * CONC_EINVAL (NULL) or CONC_EPERM (a request of c is still waiting:
 * nothing changes). */
CONC_API int conc_banker_unclaim(conc_banker_client_t *c);

/* Ask for req[] more units (req[i] >= 0). Blocks — parking only the
 * calling thread or green thread — until granting leaves the system safe,
 * then holds them. Returns 0 (granted), CONC_ETIMEDOUT (the timeout
 * passed or a Timeout scope ended the wait: nothing granted), CONC_EKILLED
 * (the waiting green thread was killed: nothing granted), CONC_EINVAL
 * (NULL, a negative entry, NaN timeout, or what c would hold exceeds its
 * claim). An all-zero request returns 0 at once. */
CONC_API int conc_banker_request(conc_banker_client_t *c, const long *req, double timeout);

/* Would req[] be granted right now? Changes nothing. Returns 0 (it would),
 * CONC_EAGAIN (not enough units are available), CONC_EDEADLK (the units
 * are there but granting would leave the system unsafe), CONC_EINVAL (as
 * conc_banker_request). */
CONC_API int conc_banker_query(conc_banker_client_t *c, const long *req);

/* Give back rel[] units (0 <= rel[i] <= what c holds). Grants waiting
 * requests that became safe. Returns 0 or CONC_EINVAL. Never blocks. */
CONC_API int conc_banker_release(conc_banker_client_t *c, const long *rel);

/* The safe sequence of the current state, by Habermann's check: passes
 * over the clients in claim order, each pass finishing every client whose
 * remaining need fits in the work vector. Writes up to cap client ids to
 * ids[] and the sequence length to *n. Returns 0 (safe: *n = number of
 * clients), CONC_EDEADLK (unsafe: *n clients could finish, the others
 * could not) or CONC_EINVAL (NULL b or n; ids may be NULL when cap is 0).
 * A snapshot: it may be stale as soon as it returns. */
CONC_API int conc_banker_safe_sequence(conc_banker_t *b, size_t *ids, size_t cap, size_t *n);

/* A consistent snapshot of the whole state: available[ntypes], and for
 * each client k (claim order, up to cap clients) its id in ids[k] (may be
 * NULL), its claim in max[k*ntypes ...] and what it holds in
 * alloc[k*ntypes ...] (either may be NULL). *nclients gets the number of
 * clients. Returns 0 or CONC_EINVAL. */
CONC_API int conc_banker_snapshot(conc_banker_t *b, long *available, size_t cap, size_t *ids,
                                  long *max, long *alloc, size_t *nclients);

/* Number of resource types; a client's id (claim order from 0) or
 * (size_t)-1 for NULL; what c holds (copied to held[ntypes]: 0 or
 * CONC_EINVAL). */
CONC_API size_t conc_banker_ntypes(const conc_banker_t *b);
CONC_API size_t conc_banker_client_id(const conc_banker_client_t *c);
CONC_API int conc_banker_held(conc_banker_client_t *c, long *held);

#ifdef __cplusplus
}
#endif

#endif
