/*
 * local.c — threading.local.
 *
 * A conc_local_t is an index into every thread record's slot array plus a
 * generation number; a slot holds (generation, value), so a value left by
 * a freed local is never seen by a new local that reuses the index.
 * `table` maps each index to the generation and destructor of the live
 * local using it. Lock order: locals_lock -> registry lock -> a record's
 * slot-set lock. Destructors always run with no lock held.
 *
 * Green threads have their own values (gevent's local): a green thread's
 * first set gives it a slot set of its own, kept on a list so that
 * conc_local_free finds its values too; its destructors run when it ends.
 */
#include <stdlib.h>
#include <string.h>

#include "sync/internal.h"
#include "thread/internal.h"

struct conc_local {
    size_t idx;
    uint64_t gen;
    void (*dtor)(void *);
    void *(*init)(void *arg); /* a local subclass's __init__: first get per context */
    void *init_arg;
};

typedef struct {
    uint64_t gen; /* 0: index free */
    void (*dtor)(void *);
} table_entry_t;

static conc_lock_t locals_lock = CONC_LOCK_INIT;
static table_entry_t *table;
static size_t table_len;
static uint64_t next_gen = 1;

typedef struct {
    void (*dtor)(void *);
    void *value;
} pending_t;

static void locals_lock_acquire(void) { conc__lock_hold(&locals_lock); }

int conc_local_new(conc_local_t **out, void (*dtor)(void *))
{
    return conc_local_new_init(out, NULL, NULL, dtor);
}

int conc_local_new_init(conc_local_t **out, void *(*init)(void *arg), void *arg, void (*dtor)(void *))
{
    if (!out)
        return CONC_EINVAL;
    conc_local_t *l = malloc(sizeof *l);
    if (!l)
        return CONC_ENOMEM;
    l->init = init;
    l->init_arg = arg;
    locals_lock_acquire();
    size_t i;
    for (i = 0; i < table_len; i++)
        if (table[i].gen == 0)
            break;
    if (i == table_len) {
        size_t n = table_len ? table_len * 2 : 16;
        table_entry_t *nt = realloc(table, n * sizeof *nt);
        if (!nt) {
            conc_lock_release(&locals_lock);
            free(l);
            return CONC_ENOMEM;
        }
        memset(nt + table_len, 0, (n - table_len) * sizeof *nt);
        table = nt;
        table_len = n;
    }
    l->idx = i;
    l->gen = next_gen++;
    l->dtor = dtor;
    table[i].gen = l->gen;
    table[i].dtor = dtor;
    conc_lock_release(&locals_lock);
    *out = l;
    return 0;
}

/* A green thread's values: a slot set on a list (for conc_local_free). */
typedef struct gslots {
    conc__slotset_t set;
    struct gslots *prev, *next;
} gslots_t;
static gslots_t *gslots_list; /* under locals_lock */

/* The calling context's slot set: its green thread's (made on demand when
 * create) or its OS thread's. NULL when there is none (or no memory). */
static conc__slotset_t *current_set(bool create)
{
    conc__ctx_t *ctx = conc__cur;
    if (ctx && ctx->is_green) {
        if (!ctx->locals && create) {
            gslots_t *g = calloc(1, sizeof *g);
            if (!g)
                return NULL;
            conc_lock_init(&g->set.lock);
            locals_lock_acquire();
            g->next = gslots_list;
            if (gslots_list)
                gslots_list->prev = g;
            gslots_list = g;
            conc_lock_release(&locals_lock);
            ctx->locals = g;
        }
        return ctx->locals ? &((gslots_t *)ctx->locals)->set : NULL;
    }
    conc_thread_t *t = conc__thread_self();
    return t ? &t->locals : NULL;
}

void *conc_local_get(conc_local_t *l)
{
    conc__slotset_t *t;
    void *v = NULL;
    bool have = false;
    if (!l)
        return NULL;
    if ((t = current_set(false))) {
        conc__lock_hold(&t->lock);
        if (l->idx < t->nslots && t->slots[l->idx].gen == l->gen) {
            v = t->slots[l->idx].value;
            have = true;
        }
        conc_lock_release(&t->lock);
    }
    if (!have && l->init) {
        /* First use in this context: run the initialiser (no lock held:
         * it may use other locals), then keep what it made. */
        v = l->init(l->init_arg);
        if (conc_local_set(l, v, NULL) != 0 && l->dtor && v) {
            l->dtor(v); /* out of memory: nothing may leak */
            v = NULL;
        }
    }
    return v;
}

int conc_local_set(conc_local_t *l, void *value, void **old)
{
    if (!l)
        return CONC_EINVAL;
    conc__slotset_t *t = current_set(true);
    if (!t)
        return CONC_ENOMEM;
    conc__lock_hold(&t->lock);
    if (l->idx >= t->nslots) {
        size_t n = t->nslots ? t->nslots : 4;
        while (n <= l->idx)
            n *= 2;
        conc__slot_t *ns = realloc(t->slots, n * sizeof *ns);
        if (!ns) {
            conc_lock_release(&t->lock);
            return CONC_ENOMEM;
        }
        memset(ns + t->nslots, 0, (n - t->nslots) * sizeof *ns);
        t->slots = ns;
        t->nslots = n;
    }
    conc__slot_t *s = &t->slots[l->idx];
    void *prev = s->gen == l->gen ? s->value : NULL;
    s->gen = l->gen;
    s->value = value;
    conc_lock_release(&t->lock);
    if (old)
        *old = prev;
    return 0;
}

typedef struct {
    conc_local_t *l;
    void **vals;
    size_t n, cap;
    bool oom;
} collect_t;

static void collect_set(conc__slotset_t *t, collect_t *c)
{
    conc__lock_hold(&t->lock);
    if (c->l->idx < t->nslots && t->slots[c->l->idx].gen == c->l->gen) {
        conc__slot_t *s = &t->slots[c->l->idx];
        if (s->value) {
            if (c->n == c->cap) {
                size_t ncap = c->cap ? c->cap * 2 : 8;
                void **nv = realloc(c->vals, ncap * sizeof *nv);
                if (nv) {
                    c->vals = nv;
                    c->cap = ncap;
                }
            }
            if (c->n < c->cap)
                c->vals[c->n++] = s->value;
            else
                c->oom = true;
        }
        s->gen = 0;
        s->value = NULL;
    }
    conc_lock_release(&t->lock);
}

static void collect_one(conc_thread_t *t, void *arg)
{
    collect_set(&t->locals, arg);
}

int conc_local_free(conc_local_t *l)
{
    if (!l)
        return CONC_EINVAL;
    collect_t c = {.l = l};
    locals_lock_acquire();
    table[l->idx].gen = 0;
    table[l->idx].dtor = NULL;
    conc__thread_foreach(collect_one, &c);
    for (gslots_t *g = gslots_list; g; g = g->next)
        collect_set(&g->set, &c);
    conc_lock_release(&locals_lock);
    if (l->dtor)
        for (size_t i = 0; i < c.n; i++)
            l->dtor(c.vals[i]);
    free(c.vals);
    free(l);
    return 0;
}

/* Run the destructors of every value in t (its context is ending). */
static void set_exit(conc__slotset_t *t)
{
    if (t->nslots == 0) /* only its context grows it: no values ever set */
        return;
    /* Destructors may set new values: repeat a few rounds, like pthread keys. */
    for (int round = 0; round < 4; round++) {
        pending_t *p = NULL;
        size_t n = 0;
        locals_lock_acquire();
        conc__lock_hold(&t->lock);
        if (t->nslots) {
            p = malloc(t->nslots * sizeof *p);
            for (size_t i = 0; i < t->nslots; i++) {
                conc__slot_t *s = &t->slots[i];
                if (s->gen && s->value && i < table_len && table[i].gen == s->gen && p && table[i].dtor) {
                    p[n].dtor = table[i].dtor;
                    p[n].value = s->value;
                    n++;
                }
                if (p) {
                    s->gen = 0;
                    s->value = NULL;
                }
            }
        }
        conc_lock_release(&t->lock);
        conc_lock_release(&locals_lock);
        for (size_t i = 0; i < n; i++)
            p[i].dtor(p[i].value);
        free(p);
        if (n == 0)
            break;
    }
    conc__lock_hold(&t->lock);
    free(t->slots);
    t->slots = NULL;
    t->nslots = 0;
    conc_lock_release(&t->lock);
}

void conc__locals_thread_exit(conc_thread_t *t)
{
    set_exit(&t->locals);
}

void conc__locals_ctx_exit(conc__ctx_t *ctx)
{
    gslots_t *g = ctx->locals;
    if (!g)
        return;
    set_exit(&g->set); /* destructors run on the green thread itself */
    locals_lock_acquire();
    if (g->prev)
        g->prev->next = g->next;
    else
        gslots_list = g->next;
    if (g->next)
        g->next->prev = g->prev;
    conc_lock_release(&locals_lock);
    ctx->locals = NULL;
    free(g);
}

void conc__locals_atfork_prepare(void) { locals_lock_acquire(); }
void conc__locals_atfork_parent(void) { conc_lock_release(&locals_lock); }
void conc__locals_atfork_child(void) { conc_lock_init(&locals_lock); }
