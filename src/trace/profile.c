/*
 * profile.c — wait profiles: for each object waited on (a Lock, a Queue, a
 * Future, a Condition...), how often a context had to park on it, how long
 * in total and at most, and the call site that waited longest — Go's
 * mutex and block profiles, mutrace.
 *
 * Opt-in (CONC_PROFILE=1 or conc_profile_start): the observed park
 * (trace.c) times every park and calls conc__profile_note, which finds the
 * call site with backtrace(3) — the first frame outside conc when symbol
 * names are known (a shared libconc), else a fixed depth — and adds the
 * wait to a table keyed by the object (or, for a waiter that does not say
 * what it waits on, by the call site) under one mutex. Parks are the slow
 * path already (a futex sleep or a green switch), so the table costs
 * little beside them; uncontended acquires never park and are not seen.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "conc.h"
#include "trace/internal.h"

#define NENT 4096 /* power of two */
#define NSITE 4
#define DEPTH 12

typedef struct pent {
    const void *key;
    uint8_t kind, used;
    uint64_t n, total, max;
    struct { void *pc; uint64_t ns; } site[NSITE];
} pent_t;

static pthread_mutex_t prof_mu = PTHREAD_MUTEX_INITIALIZER;
static pent_t *table;
static size_t nused;
static uint64_t lost; /* waits not recorded: the table was full */

static bool obs_toggle(uint32_t bit, bool on)
{
#ifndef CONC_NO_OBSERVE
    uint32_t old = on ? atomic_fetch_or_explicit(CONC__A(&conc__obs_flags), bit, memory_order_seq_cst)
                      : atomic_fetch_and_explicit(CONC__A(&conc__obs_flags), ~bit, memory_order_seq_cst);
    return (old & bit) != 0;
#else
    (void)bit;
    (void)on;
    return false;
#endif
}

/* Where conc's code is. In a shared libconc: its object (dladdr's base).
 * Linked statically, conc's objects sit together in the program's text:
 * the span of the addresses of functions from every module stands for it. */
static const void *own_base;
static uintptr_t span_lo, span_hi;
static bool shared_lib;

static void where_init(void)
{
    Dl_info me;
    bool found = dladdr((void *)conc_profile_start, &me) != 0;
    own_base = found ? me.dli_fbase : NULL;
    shared_lib = found && me.dli_fname && strstr(me.dli_fname, ".so"); /* libconc.so.N */
    void *probes[] = {
        (void *)conc_profile_start, (void *)conc_trace_start, (void *)conc_lock_acquire,
        (void *)conc_rlock_acquire, (void *)conc_cond_wait, (void *)conc_event_wait,
        (void *)conc_semaphore_acquire, (void *)conc_barrier_wait, (void *)conc_queue_get,
        (void *)conc_queue_put, (void *)conc_future_result, (void *)conc_submit, (void *)conc_wait,
        (void *)conc_go, (void *)conc_green_join, (void *)conc_sleep, (void *)conc_thread_join,
        (void *)conc_thread_start, (void *)conc_process_join, (void *)conc_strerror, (void *)conc_timeout_begin,
    };
    span_lo = UINTPTR_MAX;
    span_hi = 0;
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        uintptr_t a = (uintptr_t)probes[i];
        if (a < span_lo)
            span_lo = a;
        if (a > span_hi)
            span_hi = a;
    }
}

static bool is_conc_frame(void *pc)
{
    if (shared_lib) {
        Dl_info di;
        return dladdr(pc, &di) && di.dli_fbase == own_base;
    }
    return (uintptr_t)pc >= span_lo && (uintptr_t)pc <= span_hi + 4096;
}

/* The return address in the first caller outside conc. */
static void *call_site(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, where_init);
    void *pcs[DEPTH];
    int n = backtrace(pcs, DEPTH);
    for (int i = 1; i < n; i++)
        if (!is_conc_frame(pcs[i]))
            return pcs[i];
    return n > 0 ? pcs[n - 1] : NULL;
}

void conc__profile_note(const conc__waiter_t *w, int64_t wait_ns, void *site_hint)
{
    (void)site_hint;
    if (wait_ns < 0)
        wait_ns = 0;
    void *site = call_site();
    const void *key = w->obj ? w->obj : site;
    pthread_mutex_lock(&prof_mu);
    if (!table) {
        pthread_mutex_unlock(&prof_mu);
        return;
    }
    size_t h = ((uintptr_t)key >> 4) * 0x9E3779B97F4A7C15ull >> 52 & (NENT - 1);
    pent_t *e = NULL;
    for (size_t k = 0; k < NENT; k++, h = (h + 1) & (NENT - 1)) {
        pent_t *c = &table[h];
        if (c->used && c->key == key && c->kind == w->kind) {
            e = c;
            break;
        }
        if (!c->used) {
            if (nused * 4 >= NENT * 3)
                break; /* keep probes short: count it as lost */
            c->used = 1;
            c->key = key;
            c->kind = w->kind;
            nused++;
            e = c;
            break;
        }
    }
    if (!e) {
        lost++;
        pthread_mutex_unlock(&prof_mu);
        return;
    }
    e->n++;
    e->total += (uint64_t)wait_ns;
    if ((uint64_t)wait_ns > e->max)
        e->max = (uint64_t)wait_ns;
    int j, least = 0;
    for (j = 0; j < NSITE; j++) {
        if (e->site[j].pc == site || !e->site[j].pc)
            break;
        if (e->site[j].ns < e->site[least].ns)
            least = j;
    }
    if (j == NSITE) { /* full: the least waited site makes room */
        j = least;
        e->site[j].ns = 0;
    }
    e->site[j].pc = site;
    e->site[j].ns += (uint64_t)wait_ns;
    pthread_mutex_unlock(&prof_mu);
}

int conc_profile_start(void)
{
#ifdef CONC_NO_OBSERVE
    return CONC_ENOTSUP;
#endif
    pthread_mutex_lock(&prof_mu);
    if (!table && !(table = calloc(NENT, sizeof *table))) {
        pthread_mutex_unlock(&prof_mu);
        return CONC_ENOMEM;
    }
    pthread_mutex_unlock(&prof_mu);
    obs_toggle(CONC__OBS_PROFILE, true);
    return 0;
}

int conc_profile_stop(void)
{
    return obs_toggle(CONC__OBS_PROFILE, false) ? 0 : CONC_EPERM;
}

void conc_profile_reset(void)
{
    pthread_mutex_lock(&prof_mu);
    if (table)
        memset(table, 0, NENT * sizeof *table);
    nused = 0;
    lost = 0;
    pthread_mutex_unlock(&prof_mu);
}

static int cmp_total(const void *x, const void *y)
{
    const conc_profile_entry_t *a = x, *b = y;
    return (a->total_ns < b->total_ns) - (a->total_ns > b->total_ns);
}

int conc_profile_top(conc_profile_entry_t *out, int n)
{
    if (!out || n < 0)
        return CONC_EINVAL;
    pthread_mutex_lock(&prof_mu);
    size_t cnt = 0;
    conc_profile_entry_t *all = malloc((nused ? nused : 1) * sizeof *all);
    if (!all) {
        pthread_mutex_unlock(&prof_mu);
        return CONC_ENOMEM;
    }
    for (size_t i = 0; table && i < NENT; i++) {
        pent_t *e = &table[i];
        if (!e->used)
            continue;
        conc_profile_entry_t *o = &all[cnt++];
        o->obj = e->key;
        o->kind = conc__wait_kind_name(e->kind);
        o->known = e->kind != 0;
        o->contended = e->n;
        o->total_ns = e->total;
        o->max_ns = e->max;
        o->site = NULL;
        o->site_ns = 0;
        for (int j = 0; j < NSITE; j++)
            if (e->site[j].pc && e->site[j].ns >= o->site_ns) {
                o->site = e->site[j].pc;
                o->site_ns = e->site[j].ns;
            }
    }
    pthread_mutex_unlock(&prof_mu);
    qsort(all, cnt, sizeof *all, cmp_total);
    int m = (size_t)n < cnt ? n : (int)cnt;
    memcpy(out, all, (size_t)m * sizeof *out);
    free(all);
    return m;
}

int conc_profile_print(FILE *f, int top_n)
{
    if (!f || top_n < 0)
        return CONC_EINVAL;
    if (top_n == 0)
        top_n = 20;
    conc_profile_entry_t *e = malloc((size_t)top_n * sizeof *e);
    if (!e)
        return CONC_ENOMEM;
    int n = conc_profile_top(e, top_n);
    if (n < 0) {
        free(e);
        return n;
    }
    fprintf(f, "conc wait profile: top %d of what contexts parked on, by total wait\n", n);
    fprintf(f, "%-12s %-18s %10s %12s %12s  %s\n", "what", "object", "contended", "total ms", "max ms",
            "call site that waited most");
    for (int i = 0; i < n; i++) {
        char obj[32], site[160];
        if (e[i].known)
            snprintf(obj, sizeof obj, "%p", e[i].obj);
        else
            snprintf(obj, sizeof obj, "(not said)");
        Dl_info di;
        if (e[i].site && dladdr(e[i].site, &di) && di.dli_sname)
            snprintf(site, sizeof site, "%s+%#lx (%p)", di.dli_sname,
                     (unsigned long)((char *)e[i].site - (char *)di.dli_saddr), e[i].site);
        else if (e[i].site && dladdr(e[i].site, &di) && di.dli_fname)
            snprintf(site, sizeof site, "%s+%#lx", di.dli_fname,
                     (unsigned long)((char *)e[i].site - (char *)di.dli_fbase));
        else
            snprintf(site, sizeof site, "%p", e[i].site);
        fprintf(f, "%-12s %-18s %10llu %12.3f %12.3f  %s\n", e[i].kind, obj, (unsigned long long)e[i].contended,
                (double)e[i].total_ns / 1e6, (double)e[i].max_ns / 1e6, site);
    }
    pthread_mutex_lock(&prof_mu);
    uint64_t nlost = lost;
    pthread_mutex_unlock(&prof_mu);
    if (nlost)
        fprintf(f, "(%llu waits not recorded: the table was full)\n", (unsigned long long)nlost);
    free(e);
    return ferror(f) ? CONC_ESYS : 0;
}

static void profile_at_exit(void)
{
    conc_profile_stop();
    conc_profile_print(stderr, 20);
}

void conc__profile_env(void);
void conc__profile_env(void)
{
    const char *e = getenv("CONC_PROFILE");
    if (e && *e && strcmp(e, "0") != 0 && conc_profile_start() == 0)
        atexit(profile_at_exit);
}
