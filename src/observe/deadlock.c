/*
 * deadlock.c — runtime deadlock detection (conc/deadlock.h,
 * CONC_DEBUG=deadlock): the wait-for graph check.
 *
 * A blocking acquire or join with detection on parks in slices of the
 * detection delay; after each slice it calls conc__deadlock_check with
 * what it waits on. The check follows the chain under the registry lock:
 * the holder of that object (a Lock's last acquirer, an RLock's owner, the
 * joined thread or green thread), what that holder is blocked on (the copy
 * conc__park keeps in every context), its holder, and so on. Reaching the
 * caller again is a cycle: it is printed and the caller gets CONC_EDEADLK.
 *
 * Exactly one victim per cycle: checks run one at a time (the registry
 * lock), and a checker is not parked while it checks (its blocked flag is
 * 0), so a second member of the same cycle checking later sees the chain
 * broken at the first — which by then is leaving its wait with
 * CONC_EDEADLK. A member between two slices is missed the same way, which
 * only delays the finding by a slice. Contexts are found by serial or
 * address in the registry, so a holder that ended is simply not found;
 * what the walk needs of a holder (blocked?, on what, its name) is copied
 * while the registry pins it (conc__ctx_snap_t): a green thread that ends
 * and is freed meanwhile is never read.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conc/sync.h"
#include "observe/internal.h"

#define CHAIN_MAX 64

typedef struct {
    const conc__ctx_t *ctx; /* identity only: never dereferenced (it may be gone) */
    const void *obj;
    int kind;
    char name[48];
} step_t;

int conc__deadlock_check(const void *obj, int kind)
{
    conc__ctx_t *me = conc__ctx();
    step_t chain[CHAIN_MAX];
    int n = 0;
    bool cycle = false;
    conc__reg_lock();
    const void *o = obj;
    int k = kind;
    chain[n] = (step_t){me, o, k, ""};
    conc__ctx_name(me, chain[n].name, sizeof chain[n].name);
    n++;
    while (n < CHAIN_MAX) {
        /* A Lock's owner word names its holder only while the lock carries
         * TRACKED (taken with debugging on, lock.c); a Lock taken with it
         * off keeps whichever serial was there before: no edge. */
        if (k == CONC__WAIT_LOCK &&
            (__atomic_load_n(&((const conc_lock_t *)o)->state, __ATOMIC_ACQUIRE) & 5u) != 5u)
            break;
        /* h is a copy made while the holder was pinned: a green thread
         * that ends now and is freed is never read (only its copy). */
        conc__ctx_snap_t h;
        if (!conc__wait_holder(o, k, &h))
            break;
        if (h.id == me) {
            cycle = true;
            break;
        }
        if (!h.blocked)
            break;
        o = h.wait_obj;
        k = h.wait_kind;
        bool seen = false;
        for (int i = 0; i < n; i++)
            seen |= chain[i].ctx == h.id;
        if (seen)
            break; /* a cycle that does not include me: its own members will find it */
        chain[n] = (step_t){h.id, o, k, ""};
        memcpy(chain[n].name, h.name, sizeof h.name);
        n++;
    }
    if (cycle) {
        char what[160];
        fprintf(stderr, "conc: deadlock detected (CONC_DEBUG=deadlock); CONC_EDEADLK to %s:\n", chain[0].name);
        for (int i = 0; i < n; i++) {
            const char *next = i + 1 < n ? chain[i + 1].name : chain[0].name;
            conc__describe_obj(what, sizeof what, chain[i].obj, chain[i].kind);
            fprintf(stderr, "  %s waits for %s, held by %s\n", chain[i].name, what, next);
        }
        fflush(stderr);
    }
    conc__reg_unlock();
    if (cycle) {
        conc__debug_after_report();
        return CONC_EDEADLK;
    }
    return 0;
}

int conc__deadlock_event_wait(conc_event_t *e, int64_t deadline, const void *obj, int kind)
{
    conc__wait_label(obj, kind);
    int rc;
    for (;;) {
        int64_t pdl = deadline;
        int64_t now = 0;
        if (conc__obs_on(CONC__OBS_DEADLOCK)) {
            now = conc__now_ns();
            pdl = conc__deadlock_dl(now, deadline);
        }
        double t = CONC_FOREVER;
        if (pdl != CONC__NO_DEADLINE) {
            if (!now)
                now = conc__now_ns();
            t = pdl > now ? (double)(pdl - now) / 1e9 : 0.0;
        }
        rc = conc_event_wait(e, t);
        if (rc == CONC_ETIMEDOUT && pdl != deadline && !conc__park_interrupted(rc)) {
            if ((rc = conc__deadlock_check(obj, kind)) != 0)
                break;
            continue;
        }
        break;
    }
    conc__wait_label(NULL, 0);
    return rc;
}
