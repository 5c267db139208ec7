/*
 * shlock.c — process-shared locks (conc_plock_t, conc_prlock_t) as seen by
 * this process's lock debugging (CONC_DEBUG=lockorder, =deadlock).
 *
 * The shared Lock word holds only the holder's pid (any thread may release
 * it), the RLock word its owner's thread id, and shared memory is
 * untrusted: no context serial is ever written there. Instead a
 * process-local side table maps the lock's address in this mapping to
 * the context that took it here and the exact owner pair (id, tag) it
 * wrote: set on acquire, cleared on release, only while lock debugging is
 * on (the ipc paths test conc__obs_on first). The deadlock detector asks
 * conc__shlock_holder: it reads the shared pair once and names a holder
 * only when that copy still equals the pair recorded here, i.e. when the
 * lock is held by this process (this thread id) under that incarnation.
 * A holder in another process is never in the graph: its waits are not
 * visible here, and nothing it writes is trusted.
 *
 * A BoundedSemaphore(1) in shared memory (a semaphore used as a lock) is
 * tracked the same way: its holder is the context that took the last unit
 * here, named while the value (read once) is still 0; any release clears
 * the entry (a semaphore has no owner).
 *
 * One small chained hash table under one mutex. Lock order: the registry
 * lock (deadlock.c) may be held when this mutex is taken, never the
 * reverse; no other lock is taken under it. Its atfork handler is
 * registered before the registry's (priority 106 < 107), so fork takes
 * the registry lock first; the child forgets the table.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>

#include "observe/internal.h"

typedef struct sh_ent {
    const void *addr;
    uint64_t pair;
    uint32_t serial;
    int kind;
    struct sh_ent *next;
} sh_ent_t;

#define SH_BUCKETS 64
static sh_ent_t *sh_tab[SH_BUCKETS];
static pthread_mutex_t sh_mu = PTHREAD_MUTEX_INITIALIZER;

static unsigned sh_hash(const void *p) { return (unsigned)(((uintptr_t)p >> 3) * 2654435761u) % SH_BUCKETS; }

static sh_ent_t **sh_find(const void *addr)
{
    sh_ent_t **pp = &sh_tab[sh_hash(addr)];
    while (*pp && (*pp)->addr != addr)
        pp = &(*pp)->next;
    return pp;
}

void conc__shlock_acquired(const void *lock, int kind, uint64_t pair)
{
    conc__ctx_t *ctx = conc__ctx();
    if (conc__obs_on(CONC__OBS_DEADLOCK)) {
        pthread_mutex_lock(&sh_mu);
        /* Tested again under the mutex: a conc_debug_disable that cleared
         * the table before cannot leave this entry behind. */
        sh_ent_t **pp = conc__obs_on(CONC__OBS_DEADLOCK) ? sh_find(lock) : NULL;
        sh_ent_t *e = pp ? *pp : NULL;
        if (pp && !e && (e = calloc(1, sizeof *e))) {
            e->addr = lock;
            *pp = e;
        }
        if (e) {
            e->pair = pair;
            e->serial = ctx->serial;
            e->kind = kind;
        }
        pthread_mutex_unlock(&sh_mu);
    }
    if (conc__obs_on(CONC__OBS_LOCKORDER))
        conc__lockdep_acquired(lock, kind);
}

void conc__shlock_released(const void *lock)
{
    pthread_mutex_lock(&sh_mu);
    sh_ent_t **pp = sh_find(lock);
    sh_ent_t *e = *pp;
    if (e) {
        *pp = e->next;
        free(e);
    }
    pthread_mutex_unlock(&sh_mu);
    conc__lockdep_released(lock);
}

uint32_t conc__shlock_holder(const void *word, int *kind)
{
    /* Only words in the table are read (a shared semaphore's or event's
     * word is never there): it is a lock some context of ours took, and
     * the caller waits on it, so it is mapped. One read of the shared
     * pair; only the copy is compared. */
    uint32_t serial = 0;
    pthread_mutex_lock(&sh_mu);
    sh_ent_t *e = *sh_find(word);
    /* a semaphore's word: its value (held while 0); its sleepers' count
     * beside it changes freely */
    uint64_t mask = e && e->kind == CONC__WAIT_SHARED_SEM ? 0xffffffffu : ~(uint64_t)0;
    if (e && e->pair == (__atomic_load_n((const uint64_t *)word, __ATOMIC_RELAXED) & mask)) {
        serial = e->serial;
        if (kind)
            *kind = e->kind;
    }
    pthread_mutex_unlock(&sh_mu);
    return serial;
}

int conc__shlock_kind(const void *word)
{
    int k = 0;
    pthread_mutex_lock(&sh_mu);
    sh_ent_t *e = *sh_find(word);
    if (e)
        k = e->kind;
    pthread_mutex_unlock(&sh_mu);
    return k;
}

bool conc__shlock_mine(const void *word, uint64_t pair)
{
    if (__atomic_load_n((const uint64_t *)word, __ATOMIC_RELAXED) != pair)
        return false;
    uint32_t me = conc__ctx()->serial;
    pthread_mutex_lock(&sh_mu);
    sh_ent_t *e = *sh_find(word);
    bool mine = e && e->pair == pair && e->serial == me;
    pthread_mutex_unlock(&sh_mu);
    return mine;
}

/* Detection switched off: entries would go stale (a release with it off
 * does not clear its entry, and a Lock's word names only the pid, so a
 * later holder of this process would be taken for the recorded one):
 * forget them all. A lock held across off and on again is simply not
 * known: no false holder. */
void conc__shlock_forget_all(void)
{
    pthread_mutex_lock(&sh_mu);
    for (int i = 0; i < SH_BUCKETS; i++) {
        for (sh_ent_t *e = sh_tab[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
        sh_tab[i] = NULL;
    }
    pthread_mutex_unlock(&sh_mu);
}

static void sh_prepare(void) { pthread_mutex_lock(&sh_mu); }
static void sh_parent(void) { pthread_mutex_unlock(&sh_mu); }
static void sh_child(void)
{
    /* The child's contexts are not the parent's holders. */
    for (int i = 0; i < SH_BUCKETS; i++)
        for (sh_ent_t *e = sh_tab[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
    for (int i = 0; i < SH_BUCKETS; i++)
        sh_tab[i] = NULL;
    pthread_mutex_unlock(&sh_mu);
}
__attribute__((constructor(106))) static void sh_atfork(void) { pthread_atfork(sh_prepare, sh_parent, sh_child); }
