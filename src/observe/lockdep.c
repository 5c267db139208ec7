/*
 * lockdep.c — lock-order checking (conc/deadlock.h, CONC_DEBUG=lockorder).
 *
 * Each context keeps the stack of locks it holds (ctx->lockdep, made on
 * first use, freed when the context ends). When it takes lock B while
 * holding A1..An, the edges Ai -> B ("held Ai, then took B") go into one
 * global graph, under one mutex: nodes are lock addresses in a hash table,
 * each with its out-edges. An edge is added once, with the backtrace of
 * the acquire that made it and the context's name. Adding A -> B first
 * searches the graph for a path B -> ... -> A: if there is one, the new
 * edge closes a cycle, i.e. two orders that can deadlock. The report
 * prints the new acquisition (stack now) and every edge of the path (its
 * recorded stack); the edge is then added all the same, so the same
 * inversion is reported once.
 *
 * Invariants: the graph holds only lock addresses and copies (names,
 * backtraces), never pointers into contexts; conc_debug_forget removes a
 * node with every edge into or out of it. A context's held stack is only
 * touched by the context itself. A release of a lock the context does
 * not hold (a Lock released by another thread) is ignored: the acquirer's
 * entry is dropped when it next releases or ends, or stays (a Lock used as
 * a signal, not a mutex, can then give extra edges: use an Event).
 */
#define _GNU_SOURCE
#include <execinfo.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "observe/internal.h"

#define HELD_MAX 32
#define BT_MAX 24

#define KNOWN_SLOTS 64 /* a power of two */

typedef struct {
    /* The locks held, oldest first: n of them on the stack; `over` more
     * were taken when it was full and are not known by name (a release
     * of a lock not on the stack is one of them). */
    int n, over;
    const void *lock[HELD_MAX];
    uint8_t kind[HELD_MAX];
    /* Edges this context saw in the graph already (direct-mapped), valid
     * while the graph's forget generation is the one noted: the steady
     * state (the same locks in the same order) takes no global lock. */
    unsigned known_gen;
    struct {
        const void *a, *b;
    } known[KNOWN_SLOTS];
} held_t;

typedef struct edge {
    struct node *to;
    struct edge *next;
    int nbt;
    void *bt[BT_MAX];
    char who[40];
} edge_t;

typedef struct node {
    const void *addr;
    uint8_t kind;
    edge_t *out;
    struct node *next; /* hash chain */
    int mark;          /* DFS */
    edge_t *via;       /* DFS: the edge that reached this node */
    struct node *from; /* DFS: from which node */
} node_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
#define NBUCKETS 4096
static node_t *buckets[NBUCKETS];
static int dfs_epoch;
static unsigned forget_gen = 1; /* atomic: bumped by every conc_debug_forget */

static unsigned known_slot(const void *a, const void *b)
{
    return (unsigned)((((uintptr_t)a >> 3) * 31u + ((uintptr_t)b >> 3)) * 2654435761u) & (KNOWN_SLOTS - 1);
}

static unsigned hash(const void *p) { return (unsigned)(((uintptr_t)p >> 3) * 2654435761u) % NBUCKETS; }

static node_t *node_get(const void *addr, int kind, bool create)
{
    node_t **pp = &buckets[hash(addr)];
    for (node_t *n = *pp; n; n = n->next)
        if (n->addr == addr)
            return n;
    if (!create)
        return NULL;
    node_t *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->addr = addr;
    n->kind = (uint8_t)kind;
    n->next = *pp;
    *pp = n;
    return n;
}

/* A path from `from` to `to` (DFS); on success the nodes' via/from fields
 * trace it back from `to`. */
static bool dfs(node_t *from, node_t *to)
{
    if (from == to)
        return true;
    from->mark = dfs_epoch;
    for (edge_t *e = from->out; e; e = e->next) {
        node_t *n = e->to;
        if (n->mark == dfs_epoch)
            continue;
        n->via = e;
        n->from = from;
        if (dfs(n, to))
            return true;
    }
    return false;
}

static void lock_words(char *buf, size_t n, const node_t *nd)
{
    char name[64];
    if (conc__name_of(nd->addr, name, sizeof name))
        snprintf(buf, n, "%s %p \"%s\"", conc__kind_word(nd->kind), nd->addr, name);
    else
        snprintf(buf, n, "%s %p", conc__kind_word(nd->kind), nd->addr);
}

static void report(node_t *a, node_t *b, const char *me, void *const *bt, int nbt)
{
    char wa[128], wb[128];
    lock_words(wa, sizeof wa, a);
    lock_words(wb, sizeof wb, b);
    fprintf(stderr,
            "conc: lock-order inversion (a possible deadlock, CONC_DEBUG=lockorder):\n"
            "  %s takes %s while holding %s, at:\n",
            me, wb, wa);
    conc__print_frames(stderr, "    ", bt, nbt);
    /* the path b -> ... -> a, from a's end back to b */
    edge_t *path[64];
    node_t *froms[64];
    int k = 0;
    for (node_t *n = a; n != b && n->from && k < 64; n = n->from) {
        path[k] = n->via;
        froms[k] = n->from;
        k++;
    }
    while (k-- > 0) {
        char wf[128], wt[128];
        lock_words(wf, sizeof wf, froms[k]);
        lock_words(wt, sizeof wt, path[k]->to);
        fprintf(stderr, "  while earlier %s took %s while holding %s, at:\n", path[k]->who, wt, wf);
        conc__print_frames(stderr, "    ", path[k]->bt, path[k]->nbt);
    }
    fflush(stderr);
}

void conc__lockdep_acquired(const void *lock, int kind)
{
    conc__ctx_t *ctx = conc__ctx();
    held_t *h = ctx->lockdep;
    if (!h) {
        if (!(h = calloc(1, sizeof *h)))
            return;
        ctx->lockdep = h;
    }
    int top = h->n;
    unsigned gen = __atomic_load_n(&forget_gen, __ATOMIC_ACQUIRE);
    if (h->known_gen != gen) {
        memset(h->known, 0, sizeof h->known);
        h->known_gen = gen;
    }
    bool all_known = true;
    for (int i = 0; i < top && all_known; i++) {
        unsigned s = known_slot(h->lock[i], lock);
        all_known = h->lock[i] == lock || (h->known[s].a == h->lock[i] && h->known[s].b == lock);
    }
    if (!all_known) {
        bool reported = false;
        pthread_mutex_lock(&g_mu);
        node_t *b = node_get(lock, kind, true);
        for (int i = 0; b && i < top; i++) {
            if (h->lock[i] == lock)
                continue;
            node_t *a = node_get(h->lock[i], h->kind[i], true);
            if (!a)
                continue;
            edge_t *e;
            for (e = a->out; e && e->to != b; e = e->next) {
            }
            unsigned s = known_slot(h->lock[i], lock);
            h->known[s].a = h->lock[i];
            h->known[s].b = lock;
            if (e)
                continue; /* known order */
            if (!(e = calloc(1, sizeof *e)))
                continue;
            e->to = b;
            e->nbt = backtrace(e->bt, BT_MAX);
            char who[40];
            conc__ctx_name(ctx, who, sizeof who);
            snprintf(e->who, sizeof e->who, "%s", who);
            dfs_epoch++;
            b->from = NULL;
            if (!reported && dfs(b, a)) {
                report(a, b, who, e->bt, e->nbt);
                reported = true;
            }
            e->next = a->out;
            a->out = e;
        }
        pthread_mutex_unlock(&g_mu);
        if (reported)
            conc__debug_after_report();
    }
    if (h->n < HELD_MAX) {
        h->lock[h->n] = lock;
        h->kind[h->n] = (uint8_t)kind;
        h->n++;
    } else {
        h->over++;
    }
}

void conc__lockdep_released(const void *lock)
{
    held_t *h = conc__ctx()->lockdep;
    if (!h)
        return;
    int top = h->n;
    for (int i = top - 1; i >= 0; i--) {
        if (h->lock[i] != lock)
            continue;
        memmove(&h->lock[i], &h->lock[i + 1], (size_t)(top - 1 - i) * sizeof h->lock[0]);
        memmove(&h->kind[i], &h->kind[i + 1], (size_t)(top - 1 - i));
        h->n--;
        return;
    }
    if (h->over > 0)
        h->over--; /* one of those taken while the stack was full */
}

void conc__lockdep_ctx_exit(conc__ctx_t *ctx)
{
    free(ctx->lockdep);
    ctx->lockdep = NULL;
}

int conc_debug_forget(const void *obj)
{
    if (!obj)
        return 0;
    conc_set_name(obj, NULL);
    pthread_mutex_lock(&g_mu);
    node_t **pp = &buckets[hash(obj)];
    while (*pp && (*pp)->addr != obj)
        pp = &(*pp)->next;
    node_t *dead = *pp;
    __atomic_fetch_add(&forget_gen, 1, __ATOMIC_RELEASE); /* every context's known edges go stale */
    if (dead) {
        *pp = dead->next;
        for (edge_t *e = dead->out, *n; e; e = n) {
            n = e->next;
            free(e);
        }
        for (int i = 0; i < NBUCKETS; i++)
            for (node_t *nd = buckets[i]; nd; nd = nd->next)
                for (edge_t **ep = &nd->out; *ep;) {
                    if ((*ep)->to == dead) {
                        edge_t *e = *ep;
                        *ep = e->next;
                        free(e);
                    } else {
                        ep = &(*ep)->next;
                    }
                }
        free(dead);
    }
    pthread_mutex_unlock(&g_mu);
    return 0;
}

/* Fork: the graph's mutex is held across fork, so a child never inherits
 * it locked by a thread that does not exist there. */
static void ld_prepare(void) { pthread_mutex_lock(&g_mu); }
static void ld_release(void) { pthread_mutex_unlock(&g_mu); }
__attribute__((constructor(105))) static void ld_atfork(void) { pthread_atfork(ld_prepare, ld_release, ld_release); }
