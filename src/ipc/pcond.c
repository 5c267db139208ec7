/*
 * pcond.c — process-shared Condition and Barrier.
 *
 * Condition: three shared words and no wait list.
 *   waiting  waiters not yet notified (changed only with the lock held);
 *   tokens   notifications handed out and not yet consumed;
 *   seq      bumped by every notify; waiters futex-sleep on it.
 * wait() (lock held): waiting++, remember seq as s0, release the lock,
 * then loop: read seq; if seq != s0 (a notify happened since this wait
 * began), try to take a token with a CAS; otherwise futex-sleep while seq
 * is unchanged. notify(n) (lock held): m = min(n, waiting), waiting -= m,
 * tokens += m, seq++, futex_wake(m). Invariant: waiting + tokens = waiters
 * inside wait(). Tokens are anonymous: if a waiter that was still on its
 * way to sleep takes the token meant for one that was woken, the woken one
 * simply sleeps again and stays counted — counts are exact, identities are
 * not (the first to look wins). A waiter never takes a token from a notify
 * that came before its wait began. On timeout the waiter takes the lock
 * back and settles its account under it: if waiting > 0 it leaves by
 * waiting--; if waiting == 0 a notify already counted it, so a token is
 * reserved for it: it takes it and reports being notified.
 *
 * The lock lives in the same mapping; the condition keeps its offset.
 *
 * Barrier: CPython's state machine (see src/sync/barrier.c) over a
 * process-shared Lock and this condition.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <math.h>
#include <string.h>

#include "core/park.h"
#include "ipc/internal.h"

#define RLXO memory_order_relaxed
#define ACQO memory_order_acquire
#define SC memory_order_seq_cst

enum { EMBEDDED = 0, LOCK = 1, RLOCK = 2 };

/* The condition's lock, from one read of kind and offset, checked: a
 * known kind, and for an outside lock an aligned address inside the
 * mapping that holds the condition (a peer may have written any offset).
 * NULL when they are bad: the condition is broken. */
typedef struct {
    void *lock;
    int kind;
} conc__pcond_lk_t;

static bool conc__pcond_resolve(conc_pcond_t *c, conc__pcond_lk_t *lk)
{
    int32_t kind = atomic_load_explicit(CONC__IA(&c->kind), RLXO);
    lk->kind = kind;
    if (kind == EMBEDDED) {
        lk->lock = &c->own;
        return true;
    }
    if (kind != LOCK && kind != RLOCK)
        return false;
    int64_t off = atomic_load_explicit(CONC__IA(&c->offset), RLXO);
    size_t need = kind == LOCK ? sizeof(conc_plock_t) : sizeof(conc_prlock_t);
    uintptr_t at = (uintptr_t)c + (uintptr_t)off;
    if ((off & 7) != 0 || !conc__ipc_in_mapping(c, sizeof *c, (const void *)at, need))
        return false;
    lk->lock = (void *)at;
    return true;
}

int conc_pcond_init(conc_pcond_t *c, conc_plock_t *lock)
{
    if (!c)
        return CONC_EINVAL;
    memset(c, 0, sizeof *c);
    if (lock) {
        c->kind = LOCK;
        c->offset = (int64_t)((char *)lock - (char *)c);
    }
    return 0;
}

int conc_pcond_init_rlock(conc_pcond_t *c, conc_prlock_t *rlock)
{
    if (!c)
        return CONC_EINVAL;
    memset(c, 0, sizeof *c);
    if (rlock && rlock != &c->own) {
        c->kind = RLOCK;
        c->offset = (int64_t)((char *)rlock - (char *)c);
    }
    return 0;
}

int conc_pcond_new(conc_pcond_t **out)
{
    if (!out)
        return CONC_EINVAL;
    return conc_shared_alloc(sizeof(conc_pcond_t), (void **)out);
}

int conc_pcond_acquire(conc_pcond_t *c, bool blocking, double timeout)
{
    if (!c)
        return CONC_EINVAL;
    conc__pcond_lk_t lk;
    if (!conc__pcond_resolve(c, &lk))
        return CONC_EBROKEN;
    if (lk.kind == LOCK)
        return conc_plock_acquire(lk.lock, blocking, timeout);
    return conc_prlock_acquire(lk.lock, blocking, timeout);
}

int conc_pcond_release(conc_pcond_t *c)
{
    if (!c)
        return CONC_EINVAL;
    conc__pcond_lk_t lk;
    if (!conc__pcond_resolve(c, &lk))
        return CONC_EBROKEN;
    if (lk.kind == LOCK)
        return conc_plock_release(lk.lock);
    return conc_prlock_release(lk.lock);
}

static bool conc__pcond_owned(const conc__pcond_lk_t *lk)
{
    if (lk->kind == LOCK)
        return conc_plock_locked(lk->lock);
    return conc_prlock_is_owned(lk->lock);
}

/* c's lock, which the caller must hold: 0, CONC_EBROKEN (a peer wrote a bad
 * kind or offset) or CONC_EPERM (not held). */
static int conc__pcond_held(conc_pcond_t *c, conc__pcond_lk_t *lk)
{
    if (!conc__pcond_resolve(c, lk))
        return CONC_EBROKEN;
    return conc__pcond_owned(lk) ? 0 : CONC_EPERM;
}

static bool conc__pcond_take(conc_pcond_t *c)
{
    uint32_t t = atomic_load_explicit(CONC__IA(&c->tokens), RLXO);
    while (t > 0)
        if (atomic_compare_exchange_weak_explicit(CONC__IA(&c->tokens), &t, t - 1, ACQO, RLXO))
            return true;
    return false;
}

/* How long a waiter that must have a token looks for it (a peer may have
 * zeroed the counters: it must not spin for ever). */
#define TOKEN_SPIN_NS (10 * 1000 * 1000)

/* The wait, with the lock held and checked. 0 notified, CONC_ETIMEDOUT,
 * CONC_EOWNERDEAD (the lock was taken back from a dead holder), or an
 * interruption (a kill, a Timeout scope: cut->code says which; 0 for
 * anything else). Interrupted, it leaves like a timeout; if a notify
 * counted it meanwhile it reports being notified and rearms the
 * interruption. The relock is never cut short. */
static int conc__pcond_wait_dl(conc_pcond_t *c, const conc__pcond_lk_t *lk, int64_t deadline,
                               conc__cut_t *cut)
{
    atomic_store_explicit(CONC__IA(&c->waiting), atomic_load_explicit(CONC__IA(&c->waiting), RLXO) + 1,
                          RLXO);
    uint32_t s0 = atomic_load_explicit(CONC__IA(&c->seq), RLXO);
    uint32_t levels = 0;
    if (lk->kind == LOCK)
        conc_plock_release(lk->lock);
    else
        levels = conc__prlock_release_all(lk->lock);

    bool notified = false, timed_out = false;
    cut->code = 0;
    uint32_t s = s0;
    for (;;) {
        if (s != s0 && conc__pcond_take(c)) {
            notified = true;
            break;
        }
        if (timed_out)
            break;
        int r = conc__shared_wait(&c->seq, s, deadline);
        if (conc__is_cut(r)) {
            *cut = conc__cut_save(r); /* one more look, then leave */
            timed_out = true;
        } else if (r == CONC_ETIMEDOUT) {
            timed_out = true;
        }
        s = atomic_load_explicit(CONC__IA(&c->seq), ACQO);
    }

    int taken;
    if (lk->kind == LOCK)
        taken = conc__plock_lock_forever(lk->lock);
    else
        taken = conc__prlock_restore(lk->lock, levels);
    if (notified) {
        conc__cut_rearm(cut);
        cut->code = 0;
        return taken;
    }
    uint32_t w = atomic_load_explicit(CONC__IA(&c->waiting), RLXO);
    if (w > 0) {
        atomic_store_explicit(CONC__IA(&c->waiting), w - 1, RLXO);
        return taken ? taken : cut->code ? cut->code : CONC_ETIMEDOUT;
    }
    /* A notify counted this waiter after its timeout: its token is there
     * (or about to be). Bounded: a peer may have zeroed the counters; then
     * this is a spurious wakeup, which a condition allows. */
    int64_t give_up = conc__now_ns() + TOKEN_SPIN_NS;
    for (unsigned i = 0; !conc__pcond_take(c); i++) {
        if ((i & 255) == 0 && conc__now_ns() >= give_up)
            break;
        conc__cpu_relax();
    }
    conc__cut_rearm(cut); /* notified after all */
    cut->code = 0;
    return taken;
}

int conc_pcond_wait(conc_pcond_t *c, double timeout)
{
    if (!c)
        return CONC_EINVAL;
    int64_t deadline;
    int rc = conc__deadline(timeout, &deadline);
    if (rc)
        return rc;
    conc__pcond_lk_t lk;
    if ((rc = conc__pcond_held(c, &lk)))
        return rc;
    conc__cut_t cut;
    return conc__pcond_wait_dl(c, &lk, deadline, &cut);
}

int conc_pcond_wait_for(conc_pcond_t *c, bool (*pred)(void *), void *arg, double timeout)
{
    if (!c || !pred)
        return CONC_EINVAL;
    int64_t deadline;
    int rc = conc__deadline(timeout, &deadline);
    if (rc)
        return rc;
    conc__pcond_lk_t lk;
    if ((rc = conc__pcond_held(c, &lk)))
        return rc;
    while (!pred(arg)) {
        if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline)
            return CONC_ETIMEDOUT;
        conc__cut_t cut;
        rc = conc__pcond_wait_dl(c, &lk, deadline, &cut);
        if (rc == CONC_EOWNERDEAD)
            return CONC_EOWNERDEAD; /* repair first; pred may see torn data */
        if (cut.code) {
            if (!pred(arg))
                return cut.code; /* a kill or a timeout scope */
            conc__cut_rearm(&cut);
            return 0;
        }
    }
    return 0;
}

static void conc__pcond_notify_locked(conc_pcond_t *c, uint32_t n)
{
    uint32_t w = atomic_load_explicit(CONC__IA(&c->waiting), RLXO);
    uint32_t m = n < w ? n : w;
    if (m == 0)
        return;
    atomic_store_explicit(CONC__IA(&c->waiting), w - m, RLXO);
    atomic_fetch_add_explicit(CONC__IA(&c->tokens), m, memory_order_release);
    atomic_fetch_add_explicit(CONC__IA(&c->seq), 1u, SC);
    conc__futex_wake(&c->seq, m > INT_MAX ? INT_MAX : (int)m, 1);
}

int conc_pcond_notify(conc_pcond_t *c, int n)
{
    if (!c || n < 0)
        return CONC_EINVAL;
    int rc;
    conc__pcond_lk_t lk;
    if ((rc = conc__pcond_held(c, &lk)))
        return rc;
    conc__pcond_notify_locked(c, (uint32_t)n);
    return 0;
}

int conc_pcond_notify_all(conc_pcond_t *c)
{
    if (!c)
        return CONC_EINVAL;
    int rc;
    conc__pcond_lk_t lk;
    if ((rc = conc__pcond_held(c, &lk)))
        return rc;
    conc__pcond_notify_locked(c, UINT32_MAX);
    return 0;
}

/* ------------------------------------------------------------- Barrier */

enum { FILLING = 0, DRAINING = 1, RESETTING = -1, BROKEN = -2 };

/* The action is a function pointer in shared memory: it means something
 * only in the initialiser's address space and its fork children, and a
 * peer could write any address there. The initialiser stores a MAC of
 * (action, arg) under its address space's secret key (common.c) in
 * `layout`; a process calls the action only when the MAC matches under
 * its own key: a fork relative, never a spawned process (another key:
 * CONC_ENOTSUP) and never a forged pointer. */
static uint64_t conc__pbarrier_tag(void (*action)(void *), void *arg)
{
    return conc__ipc_mac((uint64_t)(uintptr_t)action, (uint64_t)(uintptr_t)arg, 0x70626172ull);
}

int conc_pbarrier_init(conc_pbarrier_t *b, int parties, void (*action)(void *), void *arg, double timeout)
{
    if (!b || parties <= 0)
        return CONC_EINVAL;
    if (isnan(timeout)) /* a negative default: every wait is already up */
        return CONC_EINVAL;
    memset(b, 0, sizeof *b);
    conc_pcond_init(&b->cond, &b->lock);
    b->parties = parties;
    b->action = action;
    b->arg = arg;
    b->timeout = timeout;
    b->layout = action ? conc__pbarrier_tag(action, arg) : 0;
    return 0;
}

int conc_pbarrier_new(int parties, void (*action)(void *), void *arg, double timeout, conc_pbarrier_t **out)
{
    if (!out)
        return CONC_EINVAL;
    *out = NULL;
    conc_pbarrier_t tmp;
    int rc = conc_pbarrier_init(&tmp, parties, action, arg, timeout);
    if (rc)
        return rc;
    rc = conc_shared_alloc(sizeof(conc_pbarrier_t), (void **)out);
    if (rc == 0)
        conc_pbarrier_init(*out, parties, action, arg, timeout);
    return rc;
}

/* The barrier's condition always uses the barrier's own Lock (never the
 * offset stored in shared memory). */
static conc__pcond_lk_t conc__pbarrier_lk(conc_pbarrier_t *b)
{
    return (conc__pcond_lk_t){&b->lock, LOCK};
}

static int32_t conc__pbarrier_parties(const conc_pbarrier_t *b)
{
    return atomic_load_explicit(CONC__IA(&((conc_pbarrier_t *)b)->parties), RLXO);
}

static bool conc__pbarrier_ok(const conc_pbarrier_t *b)
{
    return b && !((uintptr_t)b & 7) && conc__pbarrier_parties(b) > 0;
}

static void conc__pbarrier_break(conc_pbarrier_t *b)
{
    b->state = BROKEN;
    conc__pcond_notify_locked(&b->cond, UINT32_MAX);
}

/* Take the barrier's lock; a lock taken over from a dead party breaks the
 * barrier (its state may be half-updated; Python's barrier breaks when a
 * party is lost). */
static void conc__pbarrier_lock(conc_pbarrier_t *b)
{
    if (conc__plock_lock_forever(&b->lock) == CONC_EOWNERDEAD)
        conc__pbarrier_break(b);
}

static void conc__pbarrier_exit(conc_pbarrier_t *b)
{
    if (b->count == 0 && (b->state == RESETTING || b->state == DRAINING)) {
        b->state = FILLING;
        conc__pcond_notify_locked(&b->cond, UINT32_MAX);
    }
}

/* Runs the action; returns 0, CONC_EBROKEN (it failed) or CONC_ENOTSUP. */
static int conc__pbarrier_action(conc_pbarrier_t *b)
{
    /* One (atomic: never re-read by the compiler) read of each; only the
     * copies are checked and used. */
    void (*action)(void *) = (void (*)(void *))__atomic_load_n((uintptr_t *)(void *)&b->action, __ATOMIC_RELAXED);
    void *arg = __atomic_load_n(&b->arg, __ATOMIC_RELAXED);
    uint64_t tag = __atomic_load_n(&b->layout, __ATOMIC_RELAXED);
    if (!action)
        return 0;
    if (tag != conc__pbarrier_tag(action, arg))
        return CONC_ENOTSUP;
    const char *m;
    int saved = conc_failure(&m);
    char saved_msg[256];
    strncpy(saved_msg, m ? m : "", sizeof saved_msg - 1);
    saved_msg[sizeof saved_msg - 1] = 0;
    conc_fail_clear();
    action(arg);
    if (conc_failure(NULL) != 0)
        return CONC_EBROKEN;
    if (saved)
        conc_fail(saved, "%s", saved_msg);
    return 0;
}

int conc_pbarrier_wait(conc_pbarrier_t *b, double timeout, int *index)
{
    if (!conc__pbarrier_ok(b))
        return CONC_EINVAL;
    if (timeout == CONC_BARRIER_DEFAULT)
        timeout = b->timeout;
    int64_t deadline;
    int rc = conc__deadline(timeout, &deadline);
    if (rc)
        return rc;

    conc__pcond_lk_t lk = conc__pbarrier_lk(b);
    conc__pbarrier_lock(b);
    /* The previous round drains (or a reset runs): wait for it, within
     * the caller's deadline (a peer could leave the state there for
     * ever); running out breaks the barrier, as a timeout below does. */
    conc__cut_t cut;
    while (b->state == DRAINING || b->state == RESETTING) {
        int w = conc__pcond_wait_dl(&b->cond, &lk, deadline, &cut);
        if (w == CONC_EOWNERDEAD)
            conc__pbarrier_break(b);
        if (cut.code) { /* a kill or a timeout scope: it had not joined */
            conc_plock_release(&b->lock);
            return cut.code;
        }
        if (w == CONC_ETIMEDOUT && (b->state == DRAINING || b->state == RESETTING))
            conc__pbarrier_break(b);
    }
    /* Under the lock, but a peer may have written anything: a count out
     * of [0, parties) is a broken barrier. */
    int32_t parties = conc__pbarrier_parties(b), count = b->count;
    if (parties <= 0 || count < 0 || count >= parties)
        conc__pbarrier_break(b);
    if (b->state < 0) {
        conc_plock_release(&b->lock);
        return CONC_EBROKEN;
    }
    int idx = count;
    b->count = count + 1;
    rc = 0;
    int intr = 0;
    if (idx + 1 == parties) {
        rc = conc__pbarrier_action(b);
        if (rc)
            conc__pbarrier_break(b);
        else {
            b->state = DRAINING;
            conc__pcond_notify_locked(&b->cond, UINT32_MAX);
        }
    } else {
        while (b->state == FILLING) {
            int w = conc__pcond_wait_dl(&b->cond, &lk, deadline, &cut);
            if (((w == CONC_ETIMEDOUT || cut.code) && b->state == FILLING) || w == CONC_EOWNERDEAD) {
                /* A timeout breaks the barrier (Python); so does an
                 * interruption, which is what this call reports. */
                conc__pbarrier_break(b);
                intr = cut.code;
                break;
            }
            if (cut.code) /* cut short just as the barrier filled: passed */
                conc__cut_rearm(&cut);
        }
        if (b->state < 0)
            rc = intr ? intr : CONC_EBROKEN;
    }
    count = b->count;
    b->count = count > 0 ? count - 1 : 0;
    conc__pbarrier_exit(b);
    conc_plock_release(&b->lock);
    if (rc == 0 && index)
        *index = idx;
    return rc;
}

int conc_pbarrier_reset(conc_pbarrier_t *b)
{
    if (!conc__pbarrier_ok(b))
        return CONC_EINVAL;
    conc__pbarrier_lock(b);
    if (b->count > 0) {
        if (b->state == FILLING || b->state == BROKEN)
            b->state = RESETTING;
    } else {
        b->state = FILLING;
    }
    conc__pcond_notify_locked(&b->cond, UINT32_MAX);
    conc_plock_release(&b->lock);
    return 0;
}

int conc_pbarrier_abort(conc_pbarrier_t *b)
{
    if (!conc__pbarrier_ok(b))
        return CONC_EINVAL;
    conc__pbarrier_lock(b);
    conc__pbarrier_break(b);
    conc_plock_release(&b->lock);
    return 0;
}

bool conc_pbarrier_broken(conc_pbarrier_t *b)
{
    if (!conc__pbarrier_ok(b))
        return false;
    conc__pbarrier_lock(b);
    bool r = b->state == BROKEN;
    conc_plock_release(&b->lock);
    return r;
}

int conc_pbarrier_n_waiting(conc_pbarrier_t *b)
{
    if (!conc__pbarrier_ok(b))
        return 0;
    conc__pbarrier_lock(b);
    int n = b->state == FILLING ? b->count : 0;
    conc_plock_release(&b->lock);
    return n;
}

int conc_pbarrier_parties(const conc_pbarrier_t *b) { return b ? conc__pbarrier_parties(b) : 0; }
