/*
 * debug.c — the switches of conc/deadlock.h (CONC_DEBUG, conc_debug_*),
 * object names (conc_set_name) and the words the dump and the reports
 * share (context names, what a wait is on, who holds it).
 *
 * The switches live in two words: conc__obs_flags (core/observe.h, read by
 * every hook inside conc) and conc__lock_hooks (conc/sync.h, read by the
 * Lock fast paths inlined into users' code). CONC_DEBUG is parsed once by a
 * constructor; later calls change both words at any time.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "conc/futures.h"
#include "conc/green.h"
#include "conc/process.h"
#include "conc/thread.h"
#include "futures/internal.h"
#include "green/internal.h"
#include "observe/internal.h"
#include "process/internal.h"
#include "thread/internal.h"

extern unsigned int conc__lock_hooks; /* sync/lock.c */

static unsigned debug_bits; /* CONC_DEBUG_* (atomic) */
int64_t conc__deadlock_slice_ns = 100000000;

unsigned conc__debug_bits(void) { return __atomic_load_n(&debug_bits, __ATOMIC_RELAXED); }

int64_t conc__deadlock_slice(void) { return __atomic_load_n(&conc__deadlock_slice_ns, __ATOMIC_RELAXED); }

static void apply(void)
{
#ifndef CONC_NO_OBSERVE
    unsigned b = conc__debug_bits();
    uint32_t set = ((b & CONC_DEBUG_LOCKORDER) ? CONC__OBS_LOCKORDER : 0) |
                   ((b & CONC_DEBUG_DEADLOCK) ? CONC__OBS_DEADLOCK : 0);
    __atomic_fetch_and(&conc__obs_flags, ~(uint32_t)CONC__OBS_LOCKDBG, __ATOMIC_SEQ_CST);
    __atomic_fetch_or(&conc__obs_flags, set, __ATOMIC_SEQ_CST);
    __atomic_store_n(&conc__lock_hooks, set ? 1u : 0u, __ATOMIC_SEQ_CST);
#endif
}

#define ALL_BITS (CONC_DEBUG_LOCKORDER | CONC_DEBUG_DEADLOCK | CONC_DEBUG_ABORT)

int conc_debug_enable(unsigned flags)
{
#ifdef CONC_NO_OBSERVE
    (void)flags;
    return CONC_EINVAL;
#else
    if (flags & ~ALL_BITS)
        return CONC_EINVAL;
    __atomic_fetch_or(&debug_bits, flags, __ATOMIC_SEQ_CST);
    apply();
    return 0;
#endif
}

int conc_debug_disable(unsigned flags)
{
    if (flags & ~ALL_BITS)
        return CONC_EINVAL;
    __atomic_fetch_and(&debug_bits, ~flags, __ATOMIC_SEQ_CST);
    apply();
    if (!(conc__debug_bits() & CONC_DEBUG_DEADLOCK))
        conc__shlock_forget_all(); /* its entries would go stale */
    return 0;
}

unsigned conc_debug_flags(void) { return conc__debug_bits(); }

int conc_debug_set_delay(double seconds)
{
    if (!(seconds > 0) || seconds > 3600)
        return CONC_EINVAL;
    int64_t ns = (int64_t)(seconds * 1e9);
    if (ns < 1)
        ns = 1;
    __atomic_store_n(&conc__deadlock_slice_ns, ns, __ATOMIC_RELAXED);
    return 0;
}

void conc__debug_after_report(void)
{
    if (conc__debug_bits() & CONC_DEBUG_ABORT) {
        fflush(stderr);
        abort();
    }
}

/* CONC_DEBUG: a comma list; "1" is the scope check's (scope_debug.c). */
void conc__debug_init(void)
{
    const char *v = getenv("CONC_DEBUG");
    if (!v)
        return;
    unsigned bits = 0;
    while (*v) {
        size_t n = strcspn(v, ",");
        if (n == 9 && strncmp(v, "lockorder", n) == 0)
            bits |= CONC_DEBUG_LOCKORDER;
        else if (n == 8 && strncmp(v, "deadlock", n) == 0)
            bits |= CONC_DEBUG_DEADLOCK;
        else if (n == 5 && strncmp(v, "abort", n) == 0)
            bits |= CONC_DEBUG_ABORT;
        else if (n && !(n == 1 && (*v == '1' || *v == '0'))) /* a typo must not pass for "on" */
            fprintf(stderr, "conc: CONC_DEBUG: unknown word \"%.*s\" ignored (known: 1, lockorder, deadlock, abort)\n",
                    (int)n, v);
        v += n;
        if (*v == ',')
            v++;
    }
    if (bits)
        conc_debug_enable(bits);
}

__attribute__((constructor(103))) static void debug_ctor(void) { conc__debug_init(); }

/* ------------------------------------------------------------ names */

typedef struct name_ent {
    const void *obj;
    struct name_ent *next;
    char name[64];
} name_ent_t;

#define NAME_BUCKETS 256
static name_ent_t *names[NAME_BUCKETS];
static pthread_mutex_t names_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned nnames; /* atomic: skip the lock while none */

static unsigned name_hash(const void *p) { return (unsigned)(((uintptr_t)p >> 4) * 2654435761u) % NAME_BUCKETS; }

int conc_set_name(const void *obj, const char *name)
{
    if (!obj)
        return CONC_EINVAL;
    pthread_mutex_lock(&names_mu);
    name_ent_t **pp = &names[name_hash(obj)];
    while (*pp && (*pp)->obj != obj)
        pp = &(*pp)->next;
    int rc = 0;
    if (!name) {
        if (*pp) {
            name_ent_t *e = *pp;
            *pp = e->next;
            free(e);
            __atomic_fetch_sub(&nnames, 1, __ATOMIC_RELAXED);
        }
    } else {
        name_ent_t *e = *pp;
        if (!e) {
            if ((e = calloc(1, sizeof *e))) {
                e->obj = obj;
                *pp = e;
                __atomic_fetch_add(&nnames, 1, __ATOMIC_RELAXED);
            } else {
                rc = CONC_ENOMEM;
            }
        }
        if (e) {
            strncpy(e->name, name, sizeof e->name - 1);
            e->name[sizeof e->name - 1] = 0;
        }
    }
    pthread_mutex_unlock(&names_mu);
    return rc;
}

bool conc__name_of(const void *obj, char *buf, size_t n)
{
    if (!__atomic_load_n(&nnames, __ATOMIC_RELAXED))
        return false;
    bool found = false;
    pthread_mutex_lock(&names_mu);
    for (name_ent_t *e = names[name_hash(obj)]; e; e = e->next)
        if (e->obj == obj) {
            snprintf(buf, n, "%s", e->name);
            found = true;
            break;
        }
    pthread_mutex_unlock(&names_mu);
    return found;
}

/* ------------------------------------------------------------ words */

const char *conc__ctx_name(const conc__ctx_t *c, char *buf, size_t n)
{
    if (c->is_green) {
        snprintf(buf, n, "%s", conc_green_name((const conc_green_t *)(const void *)c));
    } else if (conc__racy_ptr(&c->thread)) {
        const conc_thread_t *t = conc__racy_ptr(&c->thread);
        snprintf(buf, n, "%s", t->name ? t->name : "?");
    } else if (!conc__name_of(c, buf, n)) { /* a named internal thread (a pool's) */
        snprintf(buf, n, "thread %ld", c->tid);
    }
    return buf;
}

const char *conc__kind_word(int kind)
{
    switch (kind) {
    case CONC__WAIT_LOCK: return "Lock";
    case CONC__WAIT_RLOCK: return "RLock";
    case CONC__WAIT_COND: return "Condition";
    case CONC__WAIT_SEM: return "Semaphore";
    case CONC__WAIT_EVENT: return "Event";
    case CONC__WAIT_BARRIER: return "Barrier";
    case CONC__WAIT_QUEUE_GET:
    case CONC__WAIT_QUEUE_PUT:
    case CONC__WAIT_QUEUE_JOIN: return "Queue";
    case CONC__WAIT_FUTURE: return "Future";
    case CONC__WAIT_SHARED: return "shared word";
    case CONC__WAIT_SHARED_LOCK: return "shared Lock";
    case CONC__WAIT_SHARED_RLOCK: return "shared RLock";
    case CONC__WAIT_SHARED_SEM: return "shared Semaphore";
    default: return "object";
    }
}

void conc__describe_obj(char *buf, size_t n, const void *obj, int kind)
{
    char nm[72] = "";
    char name[64];
    if (obj && conc__name_of(obj, name, sizeof name))
        snprintf(nm, sizeof nm, " \"%s\"", name);
    switch (kind) {
    case CONC__WAIT_QUEUE_GET: snprintf(buf, n, "queue get on %p%s", obj, nm); break;
    case CONC__WAIT_QUEUE_PUT: snprintf(buf, n, "queue put on %p%s", obj, nm); break;
    case CONC__WAIT_QUEUE_JOIN: snprintf(buf, n, "queue join on %p%s", obj, nm); break;
    case CONC__WAIT_FUTURE: {
        const struct conc_future *f = obj;
        const void *pool = f ? __atomic_load_n(&f->owner, __ATOMIC_RELAXED) : NULL;
        const char *task = f && pool && !f->fn ? __atomic_load_n((const char *const *)&f->arg, __ATOMIC_RELAXED) : NULL;
        if (pool && task) /* a process pool's (pool/engine.c) */
            snprintf(buf, n, "result of a task %s of pool %p (future %p%s)", task, pool, obj, nm);
        else if (pool)
            snprintf(buf, n, "result of a task of pool %p (future %p%s)", pool, obj, nm);
        else
            snprintf(buf, n, "result of future %p%s", obj, nm);
        break;
    }
    case CONC__WAIT_SELECT: snprintf(buf, n, "any of several objects (select/wait)"); break;
    case CONC__WAIT_THREAD_JOIN: {
        const conc_thread_t *t = obj;
        snprintf(buf, n, "join of thread %s%s", t && t->name ? t->name : "?", nm);
        break;
    }
    case CONC__WAIT_GREEN_JOIN: {
        /* Looked up among the live ones, its name copied under its hub's
         * guard: one that ended since the joiner's wait was read may be
         * back with its hub for the next spawn (green.c), and its record
         * must not be read — nor named: conc_green_name writes. */
        conc__ctx_snap_t s;
        if (obj && conc__reg_find_ptr(&((const conc_green_t *)obj)->ctx, &s))
            snprintf(buf, n, "join of green thread %s%s", s.name, nm);
        else
            snprintf(buf, n, "join of green thread %p (ended)%s", obj, nm);
        break;
    }
    case CONC__WAIT_SLEEP: snprintf(buf, n, "sleep"); break;
    case CONC__WAIT_POOL: snprintf(buf, n, "results from the worker processes of pool %p", obj); break;
    case CONC__WAIT_FD: {
        uintptr_t v = (uintptr_t)obj;
        int fd = (int)(unsigned)(v & 0xffffffffu);
        int ev = (int)(v >> 32);
        snprintf(buf, n, "fd %d %s", fd,
                 ev == 3 ? "readable or writable" : (ev & 2) ? "writable" : "readable");
        break;
    }
    case CONC__WAIT_PROCESS:
        snprintf(buf, n, "join of process %d%s", obj ? conc_process_pid(obj) : 0, nm);
        break;
    case CONC__WAIT_NONE:
    case CONC__WAIT_OTHER: snprintf(buf, n, "an internal wait"); break;
    case CONC__WAIT_SHARED: {
        /* a shared word this process took as a lock is named by its kind */
        int k = obj ? conc__shlock_kind(obj) : 0;
        snprintf(buf, n, "%s %p%s", conc__kind_word(k ? k : kind), obj, nm);
        break;
    }
    default: snprintf(buf, n, "%s %p%s", conc__kind_word(kind), obj, nm); break;
    }
}

bool conc__wait_holder(const void *obj, int kind, conc__ctx_snap_t *out)
{
    if (!obj)
        return false;
    switch (kind) {
    case CONC__WAIT_LOCK: {
        const conc_lock_t *l = obj;
        if (!(__atomic_load_n(&l->state, __ATOMIC_RELAXED) & 1u))
            return false;
        return conc__reg_find_serial(__atomic_load_n(&l->owner, __ATOMIC_RELAXED), out);
    }
    case CONC__WAIT_RLOCK: {
        const conc_rlock_t *r = obj;
        return conc__reg_find_ptr((const void *)__atomic_load_n(&r->owner, __ATOMIC_RELAXED), out);
    }
    case CONC__WAIT_THREAD_JOIN: {
        const conc_thread_t *t = obj;
        return conc__reg_find_ptr(__atomic_load_n(&t->ctx, __ATOMIC_RELAXED), out);
    }
    case CONC__WAIT_GREEN_JOIN: {
        conc_green_t *g = (conc_green_t *)obj;
        return conc__reg_find_ptr(&g->ctx, out);
    }
    case CONC__WAIT_SHARED: /* a shared lock held by a context of this process */
    case CONC__WAIT_SHARED_LOCK:
    case CONC__WAIT_SHARED_RLOCK:
    case CONC__WAIT_SHARED_SEM:
        return conc__reg_find_serial(conc__shlock_holder(obj, NULL), out);
    default: return false;
    }
}

#define SYMC_SIZE 4096 /* a power of two */

struct conc__symcache {
    struct {
        void *addr;
        char *text;
    } e[SYMC_SIZE];
    int used;
};

conc__symcache_t *conc__symcache_new(void) { return calloc(1, sizeof(conc__symcache_t)); }

void conc__symcache_free(conc__symcache_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < SYMC_SIZE; i++)
        free(c->e[i].text);
    free(c);
}

static void sym_text(void *addr, char *buf, size_t n)
{
    Dl_info di;
    if (dladdr(addr, &di) && di.dli_fname) {
        const char *mod = strrchr(di.dli_fname, '/');
        mod = mod ? mod + 1 : di.dli_fname;
        char nm[128];
        uintptr_t at = 0;
        if (di.dli_sname)
            snprintf(buf, n, "%s(%s+0x%lx) [%p]", mod, di.dli_sname,
                     (unsigned long)((uintptr_t)addr - (uintptr_t)di.dli_saddr), addr);
        else if (conc__code_name(addr, nm, sizeof nm, &at)) /* not exported: the symbol table */
            snprintf(buf, n, "%s(%s+0x%lx) [%p]", mod, nm, (unsigned long)at, addr);
        else
            snprintf(buf, n, "%s(+0x%lx) [%p]", mod, (unsigned long)((uintptr_t)addr - (uintptr_t)di.dli_fbase),
                     addr);
    } else {
        snprintf(buf, n, "[%p]", addr);
    }
}

void conc__print_frames_c(FILE *f, const char *prefix, void *const *frames, int n, conc__symcache_t *c)
{
    for (int i = 0; i < n; i++) {
        char buf[256];
        const char *text = NULL;
        size_t slot = 0;
        if (c) {
            slot = (size_t)(((uintptr_t)frames[i] >> 2) * 2654435761u) & (SYMC_SIZE - 1);
            for (int k = 0; k < 8 && c->e[slot].addr; k++, slot = (slot + 1) & (SYMC_SIZE - 1))
                if (c->e[slot].addr == frames[i]) {
                    text = c->e[slot].text;
                    break;
                }
        }
        if (!text) {
            sym_text(frames[i], buf, sizeof buf);
            text = buf;
            if (c && !c->e[slot].addr && c->used < SYMC_SIZE / 2 && (c->e[slot].text = strdup(buf))) {
                c->e[slot].addr = frames[i];
                c->used++;
            }
        }
        fprintf(f, "%s#%d %s\n", prefix, i, text);
    }
}

void conc__print_frames(FILE *f, const char *prefix, void *const *frames, int n)
{
    conc__print_frames_c(f, prefix, frames, n, NULL);
}

/* Fork: the names' mutex is held across fork (see lockdep.c). lockdep
 * takes names_mu inside its g_mu, and prepare handlers run in reverse
 * registration order: registered before lockdep's (priority 104 < 105),
 * this one runs after it, so fork takes g_mu, then names_mu. */
static void names_prepare(void) { pthread_mutex_lock(&names_mu); }
static void names_release(void) { pthread_mutex_unlock(&names_mu); }
__attribute__((constructor(104))) static void names_atfork(void)
{
    pthread_atfork(names_prepare, names_release, names_release);
}
