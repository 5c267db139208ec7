/*
 * stack.c — green-thread stacks: slabs, guard pages, reuse, overflow report.
 *
 * Stacks are carved from big anonymous mappings (slabs, MAP_NORESERVE, so
 * memory is committed page by page as a stack grows: an idle green thread
 * touches about one page). Each slot is [guard page][stack]; the guard is
 * made PROT_NONE while the process stays within a budget of memory maps —
 * every guard splits its slab into two more kernel map entries, and
 * vm.max_map_count (65530 by default) caps those, so one guard per stack
 * would cap a process near 32k green threads. Past the budget (a quarter
 * of vm.max_map_count, re-read at each slab) slots stay unguarded; raising
 * vm.max_map_count raises the budget.
 *
 * Freed stacks go to the freeing hub's cache (default size, no lock) or to
 * a global free list per size, and are reused as they are (their pages
 * stay committed). Slabs are never unmapped, so the overflow handler can
 * map any faulting address back to its slot without locks: a fault in a
 * guard page prints the green thread's name, then the process dies of the
 * SIGSEGV as it would have anyway.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "green/internal.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define CONC__VG_REGISTER(lo, hi) VALGRIND_STACK_REGISTER(lo, hi)
#else
#define CONC__VG_REGISTER(lo, hi) 0u
#endif

#ifdef CONC__TSAN
void *__tsan_create_fiber(unsigned flags);
#endif

#define SLAB_BYTES ((size_t)32 << 20)
#define MAX_SLABS 65536
#define NCLASSES 32 /* distinct stack sizes a process may use */
#define HUB_CACHE_MAX 256

typedef struct slab {
    char *base;
    size_t slot;  /* guard page + stack */
    size_t count; /* slots */
} slab_t;

typedef struct size_class {
    size_t size;             /* usable stack bytes */
    conc__stack_t *free;     /* free stacks of this size */
    size_t nfree, cap;
    slab_t *carving;         /* slab with unused slots */
    size_t next;             /* first unused slot in `carving` */
} size_class_t;

static pthread_mutex_t stacks_lock = PTHREAD_MUTEX_INITIALIZER;
static size_class_t classes[NCLASSES];
static slab_t slabs[MAX_SLABS];
static _Atomic size_t nslabs;
static size_t guards_made, guard_budget;
static size_t page_size;

static size_t read_max_map_count(void)
{
    size_t v = 65530;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
    if (f) {
        unsigned long x;
        if (fscanf(f, "%lu", &x) == 1 && x > 0)
            v = x;
        fclose(f);
    }
    return v;
}

static size_class_t *class_for(size_t size)
{
    for (int i = 0; i < NCLASSES; i++)
        if (classes[i].size == size)
            return &classes[i];
    for (int i = 0; i < NCLASSES; i++)
        if (classes[i].size == 0) {
            classes[i].size = size;
            return &classes[i];
        }
    return NULL;
}

/* A fresh slot from the class's slab (under stacks_lock). */
static int carve(size_class_t *c, size_t size, conc__stack_t *out)
{
    size_t slot = size + page_size;
    if (!c->carving || c->next == c->carving->count) {
        size_t n = atomic_load_explicit(&nslabs, memory_order_relaxed);
        if (n == MAX_SLABS)
            return CONC_ENOMEM;
        size_t count = SLAB_BYTES / slot;
        if (count == 0)
            count = 1;
        void *base = mmap(NULL, count * slot, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED)
            return CONC_ENOMEM;
        slab_t *s = &slabs[n];
        s->base = base;
        s->slot = slot;
        s->count = count;
        atomic_store_explicit(&nslabs, n + 1, memory_order_release);
        guard_budget = read_max_map_count() / 4;
        c->carving = s;
        c->next = 0;
    }
    char *base = c->carving->base + c->next++ * slot;
    out->lo = base + page_size;
    out->hi = base + slot;
    out->guarded = 0;
    out->resume_sp = NULL;
    if (guards_made < guard_budget && mprotect(base, page_size, PROT_NONE) == 0) {
        out->guarded = 1;
        guards_made++;
    }
    out->valgrind_id = CONC__VG_REGISTER(out->lo, out->hi);
#ifdef CONC__TSAN
    out->tsan_fiber = NULL; /* made outside the lock, by conc__stack_get */
#endif
    return 0;
}

int conc__stack_get(conc__hub_t *h, size_t size, conc__stack_t *out)
{
    if (h && size == CONC__GREEN_STACK_DEFAULT && h->ncache) {
        *out = h->cache[--h->ncache];
        return 0;
    }
    pthread_mutex_lock(&stacks_lock);
    if (!page_size)
        page_size = (size_t)sysconf(_SC_PAGESIZE);
    size_class_t *c = class_for(size);
    int rc = 0;
    if (!c)
        rc = CONC_ENOMEM; /* more distinct stack sizes than NCLASSES */
    else if (c->nfree)
        *out = c->free[--c->nfree];
    else
        rc = carve(c, size, out);
    pthread_mutex_unlock(&stacks_lock);
#ifdef CONC__TSAN
    if (rc == 0 && !out->tsan_fiber)
        out->tsan_fiber = __tsan_create_fiber(0);
#endif
    return rc;
}

void conc__stack_put(conc__hub_t *h, conc__stack_t *s)
{
    size_t size = (size_t)(s->hi - s->lo);
    if (h && size == CONC__GREEN_STACK_DEFAULT) {
        if (h->ncache < HUB_CACHE_MAX) {
            if (h->ncache == h->cap_cache) {
                size_t cap = h->cap_cache ? h->cap_cache * 2 : 16;
                conc__stack_t *n = realloc(h->cache, cap * sizeof *n);
                if (n) {
                    h->cache = n;
                    h->cap_cache = cap;
                }
            }
            if (h->ncache < h->cap_cache) {
                h->cache[h->ncache++] = *s;
                return;
            }
        }
    }
    pthread_mutex_lock(&stacks_lock);
    size_class_t *c = class_for(size);
    if (c && c->nfree == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        conc__stack_t *n = realloc(c->free, cap * sizeof *n);
        if (n) {
            c->free = n;
            c->cap = cap;
        }
    }
    if (c && c->nfree < c->cap) {
        c->free[c->nfree++] = *s;
    } else {
        /* No room to remember it: give the memory back, keep the range.
         * (It is not reused, so its suspended frames do not matter.) */
        madvise(s->lo, size, MADV_DONTNEED);
    }
    pthread_mutex_unlock(&stacks_lock);
}

/* ------------------------------------------------------------- overflow */

#ifndef CONC__ASAN /* ASan reports stack overflows itself */
static struct sigaction prev_segv;

static void put_str(const char *s)
{
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    char *addr = si->si_addr;
    size_t n = atomic_load_explicit(&nslabs, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        slab_t *s = &slabs[i];
        if (addr < s->base || addr >= s->base + s->slot * s->count)
            continue;
        size_t off = (size_t)(addr - s->base) % s->slot;
        if (off >= page_size)
            break;
        char *hi = s->base + ((size_t)(addr - s->base) / s->slot + 1) * s->slot;
        conc_green_t *g = conc__stack_record(hi);
        put_str("conc: stack overflow in green thread '");
        put_str(g->name[0] ? g->name : "(unnamed)");
        put_str("' (it hit the guard page below its stack; give it a bigger stack_size)\n");
        signal(SIGSEGV, SIG_DFL); /* returning re-faults and dies */
        return;
    }
    if (prev_segv.sa_flags & SA_SIGINFO) {
        if (prev_segv.sa_sigaction) {
            prev_segv.sa_sigaction(sig, si, uc);
            return;
        }
    } else if (prev_segv.sa_handler != SIG_DFL && prev_segv.sa_handler != SIG_IGN) {
        prev_segv.sa_handler(sig);
        return;
    }
    signal(SIGSEGV, SIG_DFL);
}

static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static __thread void *alt_mem; /* the alternate signal stack we installed */

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &prev_segv);
}
#endif

/* Per OS thread that runs green threads: the handler needs an alternate
 * stack, since the faulting stack is exhausted. */
void conc__stack_overflow_handler_install(void)
{
#ifndef CONC__ASAN
    pthread_once(&handler_once, install);
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return;
    size_t sz = 64 * 1024;
    void *mem = malloc(sz);
    if (!mem)
        return;
    stack_t ss = {.ss_sp = mem, .ss_size = sz, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0)
        free(mem);
    else
        alt_mem = mem;
#endif
}

/* The OS thread is ending: give back the alternate stack we gave it. */
void conc__stack_overflow_handler_thread_exit(void)
{
#ifndef CONC__ASAN
    if (!alt_mem)
        return;
    stack_t off = {.ss_flags = SS_DISABLE};
    if (sigaltstack(&off, NULL) == 0) {
        free(alt_mem);
        alt_mem = NULL;
    }
#endif
}
