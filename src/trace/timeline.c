/*
 * timeline.c — from raw records to states: the derivation that the
 * recording side leaves to conc_trace_stop.
 *
 * Records arrive sorted by time. Each track (context) runs a small state
 * machine: running -> (park) blocked -> (wake) ready -> (switch in /
 * park returns) running; a switch away from a running green thread makes
 * it ready (a yield); a hub's loop switched away is idle (no slice). Each
 * state change closes the current state's slice. A wake (or a spawn, or a
 * task submit) is a zero-length slice on the waker's track whose flow ends
 * in the woken's ready slice (the task's slice): the arrows in Perfetto.
 * Containers (a hub turn, a task) cut the state slices at their edges, so
 * slices on one track always nest.
 *
 * Wakes that come before the park they end (the waker dequeued the waiter
 * before it reached conc__park) are kept as "early" and used by that park.
 */
#include <stdlib.h>
#include <string.h>

#include "trace/internal.h"

#define LOOP_BIT 0x80000000u

typedef struct tstate {
    uint8_t st;           /* 0 none, S_RUNNING, S_READY, S_BLOCKED, S_IOWAIT, 0xff ended */
    int64_t since;
    uint64_t obj;
    uint32_t kind;
    uint64_t ready_flow;  /* flow into the coming ready slice */
    uint32_t waker;
    size_t early;         /* 1 + slice index of an early wake, or 0 */
    int64_t turn_since;   /* an open hub turn, or -1 */
    struct task { uint64_t fn, arg, flow; int64_t ts; } tasks[8];
    int ntasks;
} tstate_t;

typedef struct build {
    conc__timeline_t *tl;
    tstate_t *st;         /* parallel to tl->t */
    size_t *hash;         /* 1 + track index, open addressing */
    size_t nhash;
    uint64_t flow;
    struct submit { uint64_t fn, arg; size_t slice; } *subs;
    size_t nsubs, capsubs;
    int oom;
} build_t;

static size_t hslot(uint32_t id, size_t n) { return ((size_t)id * 2654435761u) & (n - 1); }

static int rehash(build_t *b, size_t n)
{
    size_t *h = calloc(n, sizeof *h);
    if (!h)
        return -1;
    for (size_t i = 0; i < b->tl->nt; i++) {
        size_t s = hslot(b->tl->t[i].id, n);
        while (h[s])
            s = (s + 1) & (n - 1);
        h[s] = i + 1;
    }
    free(b->hash);
    b->hash = h;
    b->nhash = n;
    return 0;
}

/* The index of track id, made on first sight (SIZE_MAX: no memory). */
static size_t track(build_t *b, uint32_t id)
{
    conc__timeline_t *tl = b->tl;
    size_t s = hslot(id, b->nhash);
    while (b->hash[s]) {
        if (tl->t[b->hash[s] - 1].id == id)
            return b->hash[s] - 1;
        s = (s + 1) & (b->nhash - 1);
    }
    if (tl->nt == tl->capt) {
        size_t nc = tl->capt * 2 + 16;
        conc__track_t *nt = realloc(tl->t, nc * sizeof *nt);
        tstate_t *ns = realloc(b->st, nc * sizeof *ns);
        if (nt)
            tl->t = nt;
        if (ns)
            b->st = ns;
        if (!nt || !ns) {
            b->oom = 1;
            return SIZE_MAX;
        }
        tl->capt = nc;
    }
    size_t i = tl->nt++;
    memset(&tl->t[i], 0, sizeof tl->t[i]);
    memset(&b->st[i], 0, sizeof b->st[i]);
    b->st[i].turn_since = -1;
    tl->t[i].id = id;
    if (id & LOOP_BIT) {
        tl->t[i].kind = TK_LOOP;
        tl->t[i].group = id & ~LOOP_BIT;
        strcpy(tl->t[i].name, "hub loop");
    }
    if (tl->nt * 2 > b->nhash) {
        if (rehash(b, b->nhash * 2)) {
            b->oom = 1;
            return SIZE_MAX;
        }
    } else {
        b->hash[s] = i + 1;
    }
    return i;
}

static size_t slice(build_t *b, size_t ti, uint8_t state, int64_t ts, int64_t end)
{
    conc__timeline_t *tl = b->tl;
    if (tl->n == tl->cap) {
        size_t nc = tl->cap * 2 + 256;
        conc__slice_t *ns = realloc(tl->s, nc * sizeof *ns);
        if (!ns) {
            b->oom = 1;
            return SIZE_MAX;
        }
        tl->s = ns;
        tl->cap = nc;
    }
    conc__slice_t *s = &tl->s[tl->n];
    memset(s, 0, sizeof *s);
    s->track = (uint32_t)ti;
    s->state = state;
    s->ts = ts;
    s->dur = end > ts ? end - ts : 0;
    return tl->n++;
}

#define SL(i) (b->tl->s[i])

/* Close ti's current state at ts and start the same state again there
 * (states != running are closed the same way). */
static void close_state(build_t *b, size_t ti, int64_t ts)
{
    tstate_t *t = &b->st[ti];
    if (t->st != S_RUNNING && t->st != S_READY && t->st != S_BLOCKED && t->st != S_IOWAIT)
        return;
    size_t i = slice(b, ti, t->st, t->since, ts);
    if (i == SIZE_MAX)
        return;
    if (t->st == S_BLOCKED) {
        SL(i).obj = t->obj;
        SL(i).kind = t->kind;
    }
    if (t->st == S_READY && t->ready_flow) {
        SL(i).flow_in = t->ready_flow;
        SL(i).peer = t->waker + 1;
        t->ready_flow = 0;
    }
    t->since = ts;
}

static void set_state(build_t *b, size_t ti, uint8_t st, int64_t ts)
{
    close_state(b, ti, ts);
    b->st[ti].st = st;
    b->st[ti].since = ts;
}

/* A blocked state ends: with a waker (flow id, its track) or not (rc). */
static void end_blocked(build_t *b, size_t ti, int64_t ts, uint32_t waker, int32_t rc)
{
    tstate_t *t = &b->st[ti];
    size_t i = slice(b, ti, S_BLOCKED, t->since, ts);
    if (i != SIZE_MAX) {
        SL(i).obj = t->obj;
        SL(i).kind = t->kind;
        SL(i).peer = waker;
        SL(i).rc = rc;
    }
    t->since = ts;
}

static uint64_t new_flow(build_t *b) { return ++b->flow; }

static void on_wake(build_t *b, size_t wi, size_t ti, int64_t ts)
{
    size_t ws = slice(b, wi, S_WAKE, ts, ts);
    if (ws == SIZE_MAX)
        return;
    SL(ws).peer = (uint32_t)ti + 1;
    tstate_t *t = &b->st[ti];
    if (t->st == S_BLOCKED) {
        uint64_t id = new_flow(b);
        SL(ws).flow_out = id;
        end_blocked(b, ti, ts, (uint32_t)wi + 1, 0);
        t->st = S_READY;
        t->ready_flow = id;
        t->waker = (uint32_t)wi;
    } else if (t->st != S_READY) {
        t->early = ws + 1; /* before its park: the park uses it */
    }
}

static void on_park(build_t *b, size_t ti, int64_t ts, uint64_t obj, uint32_t kind)
{
    tstate_t *t = &b->st[ti];
    close_state(b, ti, ts);
    if (t->early) {
        size_t ws = t->early - 1;
        t->early = 0;
        uint64_t id = new_flow(b);
        SL(ws).flow_out = id;
        t->st = S_READY;
        t->since = ts;
        t->ready_flow = id;
        t->waker = SL(ws).track;
        return;
    }
    t->st = S_BLOCKED;
    t->since = ts;
    t->obj = obj;
    t->kind = kind;
}

/* ti starts running at ts (switched in, or its park returned). */
static void run(build_t *b, size_t ti, int64_t ts, int32_t rc)
{
    tstate_t *t = &b->st[ti];
    if (t->st == S_RUNNING)
        return;
    if (t->st == S_BLOCKED)
        end_blocked(b, ti, ts, 0, rc ? rc : 1); /* resumed without a wake: timer / interruption */
    else
        close_state(b, ti, ts);
    t->early = 0;
    t->st = S_RUNNING;
    t->since = ts;
}

static void name_part(conc__track_t *t, int part, uint64_t a, uint64_t c)
{
    memcpy(t->name + part * 16, &a, 8);
    memcpy(t->name + part * 16 + 8, &c, 8);
    t->name[32] = 0;
    if (part == 0)
        t->name[16] = 0;
}

int conc__timeline_build(conc__timeline_t *tl, conc__tev_t *ev, size_t n)
{
    build_t bb = {.tl = tl}, *b = &bb;
    if (rehash(b, 64))
        return CONC_ENOMEM;
    tl->t0 = n ? ev[0].ts : 0;
    tl->t1 = n ? ev[n - 1].ts : 0;
    for (size_t k = 0; k < n && !b->oom; k++) {
        conc__tev_t *e = &ev[k];
        size_t ti = track(b, e->track);
        if (ti == SIZE_MAX)
            break;
        tstate_t *t = &b->st[ti];
        int64_t ts = e->ts;
        switch (e->type) {
        case T_INFO:
            tl->t[ti].kind = (uint8_t)(e->a & 0xff);
            tl->t[ti].os_tid = (int)(e->a >> 8);
            tl->t[ti].group = (uint32_t)e->b;
            if (t->st == 0 && tl->t[ti].kind == TK_THREAD) {
                t->st = S_RUNNING; /* a thread names itself as it runs */
                t->since = ts;
            }
            break;
        case T_NAME: name_part(&tl->t[ti], 0, e->a, e->b); break;
        case T_NAME2: name_part(&tl->t[ti], 1, e->a, e->b); break;
        case T_SPAWN: {
            size_t gi = track(b, (uint32_t)e->a);
            if (gi == SIZE_MAX)
                break;
            t = &b->st[ti];
            size_t s = slice(b, ti, S_SPAWN, ts, ts);
            if (s == SIZE_MAX)
                break;
            uint64_t id = new_flow(b);
            SL(s).flow_out = id;
            SL(s).peer = (uint32_t)gi + 1;
            b->st[gi].st = S_READY;
            b->st[gi].since = ts;
            b->st[gi].ready_flow = id;
            b->st[gi].waker = (uint32_t)ti;
            break;
        }
        case T_SWITCH: {
            size_t to = track(b, (uint32_t)e->a);
            if (to == SIZE_MAX)
                break;
            t = &b->st[ti];
            if (t->st == S_RUNNING || t->st == 0) {
                if (tl->t[ti].kind == TK_LOOP || (e->track & LOOP_BIT)) {
                    close_state(b, ti, ts);
                    t->st = 0; /* idle */
                } else {
                    set_state(b, ti, S_READY, ts);
                }
            }
            run(b, to, ts, 0);
            break;
        }
        case T_PARK: on_park(b, ti, ts, e->a, (uint32_t)e->b); break;
        case T_WAKE: {
            size_t wi = ti, to = track(b, (uint32_t)e->a);
            if (to != SIZE_MAX)
                on_wake(b, wi, to, ts);
            break;
        }
        case T_RESUME:
            if (t->st == S_BLOCKED && (int64_t)e->a == 0) {
                /* woken, but the wake was not recorded (dropped, or it came
                 * from outside the trace) */
                end_blocked(b, ti, ts, 0, 0);
                t->st = S_RUNNING;
                t->since = ts;
            } else {
                run(b, ti, ts, (int32_t)(int64_t)e->a);
            }
            break;
        case T_END:
            close_state(b, ti, ts);
            t->st = 0xff;
            slice(b, ti, S_END, ts, ts);
            break;
        case T_TURN_B:
            close_state(b, ti, ts);
            if (t->st == 0) {
                t->st = S_RUNNING;
                t->since = ts;
            }
            t->turn_since = ts;
            break;
        case T_TURN_E:
            close_state(b, ti, ts);
            if (t->turn_since >= 0)
                slice(b, ti, S_TURN, t->turn_since, ts);
            t->turn_since = -1;
            break;
        case T_IO_B: set_state(b, ti, S_IOWAIT, ts); break;
        case T_IO_E: set_state(b, ti, S_RUNNING, ts); break;
        case T_SUBMIT: {
            size_t s = slice(b, ti, S_SUBMIT, ts, ts);
            if (s == SIZE_MAX)
                break;
            SL(s).a = e->a;
            SL(s).b = e->b;
            if (b->nsubs == b->capsubs) {
                size_t nc = b->capsubs * 2 + 64;
                struct submit *ns = realloc(b->subs, nc * sizeof *ns);
                if (!ns) {
                    b->oom = 1;
                    break;
                }
                b->subs = ns;
                b->capsubs = nc;
            }
            b->subs[b->nsubs++] = (struct submit){e->a, e->b, s};
            break;
        }
        case T_TDONE: {
            size_t s = slice(b, ti, S_RESULT, ts, ts);
            if (s == SIZE_MAX)
                break;
            SL(s).a = e->a;
            SL(s).b = e->b;
            for (size_t j = 0; j < b->nsubs; j++)
                if (b->subs[j].fn == e->a && b->subs[j].arg == e->b) {
                    uint64_t id = new_flow(b);
                    SL(b->subs[j].slice).flow_out = id;
                    SL(b->subs[j].slice).peer = (uint32_t)ti + 1;
                    SL(s).flow_in = id;
                    b->subs[j] = b->subs[--b->nsubs];
                    break;
                }
            break;
        }
        case T_TSTART: {
            close_state(b, ti, ts);
            uint64_t id = 0;
            for (size_t j = 0; j < b->nsubs; j++)
                if (b->subs[j].fn == e->a && b->subs[j].arg == e->b) {
                    id = new_flow(b);
                    SL(b->subs[j].slice).flow_out = id;
                    SL(b->subs[j].slice).peer = (uint32_t)ti + 1;
                    b->subs[j] = b->subs[--b->nsubs]; /* order does not matter much */
                    break;
                }
            if (t->ntasks < 8)
                t->tasks[t->ntasks] = (struct task){e->a, e->b, id, ts};
            t->ntasks++;
            break;
        }
        case T_TFINISH:
            close_state(b, ti, ts);
            if (t->ntasks > 0 && --t->ntasks < 8) {
                struct task *tk = &t->tasks[t->ntasks];
                size_t s = slice(b, ti, S_TASK, tk->ts, ts);
                if (s != SIZE_MAX) {
                    SL(s).flow_in = tk->flow;
                    SL(s).a = tk->fn;
                    SL(s).b = tk->arg;
                }
            }
            break;
        case T_PSTART:
        case T_PEXIT: {
            size_t s = slice(b, ti, e->type == T_PSTART ? S_PSTART : S_PEXIT, ts, ts);
            if (s != SIZE_MAX) {
                SL(s).a = e->a;
                SL(s).b = e->b;
            }
            break;
        }
        default: break;
        }
    }
    /* What is still going on at the end is drawn up to the last record. */
    for (size_t ti = 0; ti < tl->nt && !b->oom; ti++) {
        tstate_t *t = &b->st[ti];
        if (t->st == S_RUNNING || t->st == S_READY || t->st == S_BLOCKED || t->st == S_IOWAIT) {
            uint8_t st = t->st;
            close_state(b, ti, tl->t1);
            if (tl->n && tl->s[tl->n - 1].state == st)
                tl->s[tl->n - 1].state |= S_OPEN;
        }
        for (int k = t->ntasks < 8 ? t->ntasks : 8; k-- > 0;) {
            size_t s = slice(b, ti, S_TASK | S_OPEN, t->tasks[k].ts, tl->t1);
            if (s != SIZE_MAX) {
                SL(s).flow_in = t->tasks[k].flow;
                SL(s).a = t->tasks[k].fn;
            }
        }
        if (t->turn_since >= 0)
            slice(b, ti, S_TURN | S_OPEN, t->turn_since, tl->t1);
    }
    free(b->hash);
    free(b->st);
    free(b->subs);
    return b->oom ? CONC_ENOMEM : 0;
}

void conc__timeline_free(conc__timeline_t *tl)
{
    free(tl->s);
    free(tl->t);
    memset(tl, 0, sizeof *tl);
}

const char *conc__wait_kind_name(unsigned kind)
{
    static const char *const names[] = {
        "something", "Lock", "RLock", "Condition", "Semaphore", "Event", "Barrier", "queue get",
        "queue put", "queue join", "Future", "select", "thread join", "green join", "sleep", "fd",
        "process", "shared word", "other",
    };
    return kind < sizeof names / sizeof names[0] ? names[kind] : "something";
}
