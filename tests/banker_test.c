/* The banker's algorithm (conc/banker.h): Silberschatz's textbook state
 * (Operating System Concepts, "Banker's Algorithm": five processes, three
 * resource types, Available 3 3 2) gives the textbook safe sequence, grants
 * P1's request (1,0,2), refuses P4's (3,3,0) for want of units and P0's
 * (0,2,0) as unsafe; waiting requests are granted when releases make them
 * safe; timeouts, kills and Timeout scopes cut a waiting request; a random
 * stress of 16 clients never leaves the safe states (an independent oracle
 * checks a snapshot after every grant) and never deadlocks; bad input. */
#include "test_util.h"

#include "conc/banker.h"
#include "conc/green.h"

/* --------------------------------------------------------- the oracle */

/* Independent safety check: can every client finish in some order? If
 * order is given, check that exact sequence (client positions) instead. */
static bool oracle_safe(size_t m, size_t n, const long *avail, const long *max, const long *alloc,
                        const size_t *order)
{
    long work[64];
    bool fin[64] = {0};
    cr_assert(m <= 64 && n <= 64);
    memcpy(work, avail, m * sizeof *work);
    for (size_t step = 0; step < n; step++) {
        size_t pick = n;
        for (size_t k = 0; k < n && pick == n; k++) {
            size_t c = order ? order[step] : k;
            if (fin[c])
                continue;
            bool fits = true;
            for (size_t i = 0; i < m; i++)
                if (max[c * m + i] - alloc[c * m + i] > work[i])
                    fits = false;
            if (fits)
                pick = c;
            if (order)
                break;
        }
        if (pick == n)
            return false;
        fin[pick] = true;
        for (size_t i = 0; i < m; i++)
            work[i] += alloc[pick * m + i];
    }
    return true;
}

/* ------------------------------------------------------ the textbook */

#define NP 5
#define NR 3
static const long tb_total[NR] = {10, 5, 7};
static const long tb_max[NP][NR] = {{7, 5, 3}, {3, 2, 2}, {9, 0, 2}, {2, 2, 2}, {4, 3, 3}};
static const long tb_alloc[NP][NR] = {{0, 1, 0}, {2, 0, 0}, {3, 0, 2}, {2, 1, 1}, {0, 0, 2}};

static void textbook(conc_banker_t **b, conc_banker_client_t *p[NP])
{
    cr_assert_eq(conc_banker_new(b, NR, tb_total), 0);
    for (int k = 0; k < NP; k++) {
        cr_assert_eq(conc_banker_claim(*b, tb_max[k], &p[k]), 0);
        cr_assert_eq(conc_banker_client_id(p[k]), (size_t)k);
    }
    for (int k = 0; k < NP; k++)
        cr_assert_eq(conc_banker_request(p[k], tb_alloc[k], 0), 0, "allocating P%d", k);
}

static void textbook_free(conc_banker_t *b, conc_banker_client_t *p[NP])
{
    for (int k = 0; k < NP; k++)
        cr_assert_eq(conc_banker_unclaim(p[k]), 0);
    cr_assert_eq(conc_banker_free(b), 0);
}

Test(banker, textbook_state, .timeout = TU_TIMEOUT)
{
    conc_banker_t *b;
    conc_banker_client_t *p[NP];
    textbook(&b, p);
    long avail[NR], max[NP * NR], alloc[NP * NR];
    size_t ids[NP], n = 0;
    cr_assert_eq(conc_banker_snapshot(b, avail, NP, ids, max, alloc, &n), 0);
    cr_assert_eq(n, NP);
    cr_assert_arr_eq(avail, ((long[]){3, 3, 2}), sizeof avail, "Available is 3 3 2");

    /* The book: "<P1, P3, P4, P2, P0> satisfies the safety criteria". */
    cr_assert(oracle_safe(NR, NP, avail, max, alloc, (size_t[]){1, 3, 4, 2, 0}));
    cr_assert_not(oracle_safe(NR, NP, avail, max, alloc, (size_t[]){0, 1, 2, 3, 4}));
    /* Ours: passes in claim order: P1, P3, P4 on the first, then P0, P2. */
    size_t seq[NP];
    cr_assert_eq(conc_banker_safe_sequence(b, seq, NP, &n), 0);
    cr_assert_eq(n, NP);
    cr_assert_arr_eq(seq, ((size_t[]){1, 3, 4, 0, 2}), sizeof seq);
    cr_assert(oracle_safe(NR, NP, avail, max, alloc, seq));

    /* P1 requests (1,0,2): granted; the book's safe sequence for the new
     * state is <P1, P3, P4, P0, P2>. */
    const long r1[NR] = {1, 0, 2};
    cr_assert_eq(conc_banker_query(p[1], r1), 0);
    cr_assert_eq(conc_banker_request(p[1], r1, 0), 0);
    cr_assert_eq(conc_banker_safe_sequence(b, seq, NP, &n), 0);
    cr_assert_arr_eq(seq, ((size_t[]){1, 3, 4, 0, 2}), sizeof seq);
    cr_assert_eq(conc_banker_snapshot(b, avail, NP, ids, max, alloc, &n), 0);
    cr_assert_arr_eq(avail, ((long[]){2, 3, 0}), sizeof avail);

    /* P4 requests (3,3,0): not enough units. P0 requests (0,2,0): the
     * units are there, but the state would be unsafe. Both refused. */
    const long r4[NR] = {3, 3, 0}, r0[NR] = {0, 2, 0};
    cr_assert_eq(conc_banker_query(p[4], r4), CONC_EAGAIN);
    cr_assert_eq(conc_banker_request(p[4], r4, 0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_banker_query(p[0], r0), CONC_EDEADLK);
    cr_assert_eq(conc_banker_request(p[0], r0, 0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_banker_request(p[0], r0, -1.0), CONC_ETIMEDOUT, "negative: already up");
    /* The oracle agrees that P0's grant would be unsafe. */
    long a2[NR] = {2, 1, 0}, al2[NP * NR];
    memcpy(al2, alloc, sizeof al2);
    al2[0 * NR + 1] += 2;
    cr_assert_not(oracle_safe(NR, NP, a2, max, al2, NULL));
    /* Refusals changed nothing. */
    long after[NR];
    cr_assert_eq(conc_banker_snapshot(b, after, 0, NULL, NULL, NULL, &n), 0);
    cr_assert_arr_eq(after, ((long[]){2, 3, 0}), sizeof after);
    long held[NR];
    cr_assert_eq(conc_banker_held(p[0], held), 0);
    cr_assert_arr_eq(held, ((long[]){0, 1, 0}), sizeof held);
    textbook_free(b, p);
}

/* An unsafe state, built by hand through smaller claims: the sequence
 * query reports it (this cannot happen through requests). Here: unclaim
 * makes room, and a claim never makes a safe state unsafe. */
Test(banker, claims_keep_the_state_safe, .timeout = TU_TIMEOUT)
{
    conc_banker_t *b;
    conc_banker_client_t *p[NP], *late;
    textbook(&b, p);
    cr_assert_eq(conc_banker_claim(b, (long[]){10, 5, 7}, &late), 0, "a claim of everything");
    size_t seq[NP + 1], n;
    cr_assert_eq(conc_banker_safe_sequence(b, seq, NP + 1, &n), 0);
    cr_assert_eq(n, NP + 1);
    cr_assert_eq(seq[NP], conc_banker_client_id(late), "a new client finishes last");
    cr_assert_eq(conc_banker_unclaim(late), 0);
    cr_assert_eq(conc_banker_safe_sequence(b, NULL, 0, &n), 0);
    cr_assert_eq(n, NP);
    textbook_free(b, p);
}

/* ---------------------------------------------------- waiting requests */

typedef struct {
    conc_banker_client_t *c;
    const long *req;
    double timeout;
    atomic_int rc;
    atomic_int started;
    double dt;
} req_t;

static void *requester(void *arg)
{
    req_t *r = arg;
    atomic_store(&r->started, 1);
    double t0 = tu_now();
    atomic_store(&r->rc, conc_banker_request(r->c, r->req, r->timeout));
    r->dt = tu_now() - t0;
    return NULL;
}

Test(banker, waiting_request_granted_when_safe, .timeout = TU_TIMEOUT)
{
    conc_banker_t *b;
    conc_banker_client_t *p[NP];
    textbook(&b, p);
    cr_assert_eq(conc_banker_request(p[1], (long[]){1, 0, 2}, 0), 0);
    /* P0 asks for (0,2,0): unsafe now, so it waits. */
    req_t r = {.c = p[0], .req = (long[]){0, 2, 0}, .timeout = 10.0, .rc = 1};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, requester, &r), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&r.started), 10.0));
    tu_sleep(0.05);
    cr_assert_eq(atomic_load(&r.rc), 1, "granted while unsafe");
    cr_assert_eq(conc_banker_unclaim(p[0]), CONC_EPERM, "a client with a waiting request stays");
    /* P1 finishes: gives back everything (3,0,2). Still unsafe for P0?
     * Available 5 3 2: P0 would hold (0,3,0) leaving 5 1 2: P3 (0,1,1) fits,
     * then 7 2 3: P4 needs (4,3,1): no; P2 needs (6,0,0): yes -> 10 2 5;
     * P4 no (3 > 2)... P0 needs (7,2,3): yes -> 10 5 5, P4 yes. Safe. */
    cr_assert_eq(conc_banker_release(p[1], (long[]){3, 0, 2}), 0);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&r.rc), 0);
    long held[NR];
    conc_banker_held(p[0], held);
    cr_assert_arr_eq(held, ((long[]){0, 3, 0}), sizeof held);
    size_t n;
    cr_assert_eq(conc_banker_safe_sequence(b, NULL, 0, &n), 0);
    textbook_free(b, p);
}

Test(banker, unclaim_grants_waiters, .timeout = TU_TIMEOUT)
{
    conc_banker_t *b;
    conc_banker_client_t *a, *c;
    cr_assert_eq(conc_banker_new(&b, 1, (long[]){2}), 0);
    cr_assert_eq(conc_banker_claim(b, (long[]){2}, &a), 0);
    cr_assert_eq(conc_banker_claim(b, (long[]){2}, &c), 0);
    cr_assert_eq(conc_banker_request(a, (long[]){2}, 0), 0);
    req_t r = {.c = c, .req = (long[]){1}, .timeout = 10.0, .rc = 1};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, requester, &r), 0);
    tu_sleep(0.05);
    cr_assert_eq(atomic_load(&r.rc), 1);
    cr_assert_eq(conc_banker_free(b), CONC_EPERM, "clients remain");
    cr_assert_eq(conc_banker_unclaim(a), 0, "a leaves holding 2: they go back");
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&r.rc), 0);
    cr_assert_eq(conc_banker_unclaim(c), 0);
    cr_assert_eq(conc_banker_free(b), 0);
}

Test(banker, timeout, .timeout = TU_TIMEOUT)
{
    conc_banker_t *b;
    conc_banker_client_t *a, *c;
    cr_assert_eq(conc_banker_new(&b, 2, (long[]){1, 1}), 0);
    cr_assert_eq(conc_banker_claim(b, (long[]){1, 1}, &a), 0);
    cr_assert_eq(conc_banker_claim(b, (long[]){1, 1}, &c), 0);
    /* a holds r0; c asks r1: available, but a could then never finish. */
    cr_assert_eq(conc_banker_request(a, (long[]){1, 0}, 0), 0);
    cr_assert_eq(conc_banker_query(c, (long[]){0, 1}), CONC_EDEADLK);
    double t0 = tu_now();
    cr_assert_eq(conc_banker_request(c, (long[]){0, 1}, 0.1), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.1);
    long held[2];
    conc_banker_held(c, held);
    cr_assert_arr_eq(held, ((long[]){0, 0}), sizeof held, "a timed-out request holds nothing");
    /* a finishes: c gets both */
    cr_assert_eq(conc_banker_request(a, (long[]){0, 1}, 0), 0);
    cr_assert_eq(conc_banker_release(a, (long[]){1, 1}), 0);
    cr_assert_eq(conc_banker_request(c, (long[]){1, 1}, 0), 0);
    cr_assert_eq(conc_banker_release(c, (long[]){1, 1}), 0);
    cr_assert_eq(conc_banker_unclaim(a), 0);
    cr_assert_eq(conc_banker_unclaim(c), 0);
    cr_assert_eq(conc_banker_free(b), 0);
}

/* --------------------------------------------------------- bad input */

Test(banker, bad_input, .timeout = TU_TIMEOUT)
{
    conc_banker_t *b;
    conc_banker_client_t *c;
    long tot[2] = {3, 2};
    cr_assert_eq(conc_banker_new(NULL, 2, tot), CONC_EINVAL);
    cr_assert_eq(conc_banker_new(&b, 0, tot), CONC_EINVAL);
    cr_assert_eq(conc_banker_new(&b, 2, NULL), CONC_EINVAL);
    cr_assert_eq(conc_banker_new(&b, CONC_BANKER_MAX_TYPES + 1, tot), CONC_EINVAL);
    cr_assert_eq(conc_banker_new(&b, 2, (long[]){-1, 2}), CONC_EINVAL);
    cr_assert_eq(conc_banker_new(&b, 2, (long[]){CONC_BANKER_MAX_UNITS + 1, 2}), CONC_EINVAL);
    cr_assert_eq(conc_banker_new(&b, 2, tot), 0);
    cr_assert_eq(conc_banker_ntypes(b), 2);
    /* a claim above the totals */
    cr_assert_eq(conc_banker_claim(b, (long[]){4, 0}, &c), CONC_EINVAL);
    cr_assert_eq(conc_banker_claim(b, (long[]){0, -1}, &c), CONC_EINVAL);
    cr_assert_eq(conc_banker_claim(NULL, tot, &c), CONC_EINVAL);
    cr_assert_eq(conc_banker_claim(b, NULL, &c), CONC_EINVAL);
    cr_assert_eq(conc_banker_claim(b, tot, NULL), CONC_EINVAL);
    cr_assert_eq(conc_banker_claim(b, (long[]){2, 1}, &c), 0);
    /* a request above the claim */
    cr_assert_eq(conc_banker_request(c, (long[]){3, 0}, 0), CONC_EINVAL);
    cr_assert_eq(conc_banker_request(c, (long[]){1, 0}, 0), 0);
    cr_assert_eq(conc_banker_request(c, (long[]){2, 0}, CONC_FOREVER), CONC_EINVAL,
                 "held + asked above the claim");
    cr_assert_eq(conc_banker_query(c, (long[]){2, 0}), CONC_EINVAL);
    cr_assert_eq(conc_banker_request(c, (long[]){-1, 0}, 0), CONC_EINVAL);
    cr_assert_eq(conc_banker_request(c, (long[]){0, 1}, NAN), CONC_EINVAL);
    cr_assert_eq(conc_banker_request(NULL, tot, 0), CONC_EINVAL);
    cr_assert_eq(conc_banker_request(c, NULL, 0), CONC_EINVAL);
    cr_assert_eq(conc_banker_request(c, (long[]){0, 0}, 0), 0, "nothing asked, nothing to wait for");
    /* a release above what is held */
    cr_assert_eq(conc_banker_release(c, (long[]){2, 0}), CONC_EINVAL);
    cr_assert_eq(conc_banker_release(c, (long[]){0, 1}), CONC_EINVAL);
    cr_assert_eq(conc_banker_release(c, (long[]){-1, 0}), CONC_EINVAL);
    cr_assert_eq(conc_banker_release(NULL, tot), CONC_EINVAL);
    long held[2];
    conc_banker_held(c, held);
    cr_assert_arr_eq(held, ((long[]){1, 0}), sizeof held, "refused calls changed nothing");
    cr_assert_eq(conc_banker_held(NULL, held), CONC_EINVAL);
    size_t n;
    cr_assert_eq(conc_banker_safe_sequence(NULL, NULL, 0, &n), CONC_EINVAL);
    cr_assert_eq(conc_banker_safe_sequence(b, NULL, 3, &n), CONC_EINVAL);
    cr_assert_eq(conc_banker_safe_sequence(b, NULL, 0, NULL), CONC_EINVAL);
    cr_assert_eq(conc_banker_snapshot(NULL, NULL, 0, NULL, NULL, NULL, &n), CONC_EINVAL);
    cr_assert_eq(conc_banker_client_id(NULL), (size_t)-1);
    cr_assert_eq(conc_banker_ntypes(NULL), 0);
    cr_assert_eq(conc_banker_free(NULL), CONC_EINVAL);
    cr_assert_eq(conc_banker_unclaim(NULL), CONC_EINVAL);
    cr_assert_eq(conc_banker_free(b), CONC_EPERM);
    cr_assert_eq(conc_banker_unclaim(c), 0);
    cr_assert_eq(conc_banker_free(b), 0);
}

/* ------------------------------------------------------ green threads */

typedef struct {
    conc_banker_client_t *c;
    atomic_int stop;
    atomic_long ticks;
    atomic_int rc, started;
    double dt;
} green_req_t;

static void *ticker(void *arg)
{
    green_req_t *p = arg;
    while (!atomic_load(&p->stop)) {
        atomic_fetch_add(&p->ticks, 1);
        if (conc_sleep(0.001) != 0)
            break;
    }
    return NULL;
}

static void *green_request(void *arg)
{
    green_req_t *p = arg;
    atomic_store(&p->started, 1);
    double t0 = tu_now();
    atomic_store(&p->rc, conc_banker_request(p->c, (long[]){0, 1}, 0.2));
    p->dt = tu_now() - t0;
    return NULL;
}

static void *green_request_forever(void *arg)
{
    green_req_t *p = arg;
    atomic_store(&p->started, 1);
    atomic_store(&p->rc, conc_banker_request(p->c, (long[]){0, 1}, CONC_FOREVER));
    return NULL;
}

static void *green_request_scoped(void *arg)
{
    green_req_t *p = arg;
    conc_timeout_begin(0.05);
    atomic_store(&p->rc, conc_banker_request(p->c, (long[]){0, 1}, CONC_FOREVER));
    conc_timeout_end();
    return NULL;
}

Test(banker, green_request_is_colorless, .timeout = TU_TIMEOUT)
{
    conc_banker_t *b;
    conc_banker_client_t *a, *c;
    cr_assert_eq(conc_banker_new(&b, 2, (long[]){1, 1}), 0);
    cr_assert_eq(conc_banker_claim(b, (long[]){1, 1}, &a), 0);
    cr_assert_eq(conc_banker_claim(b, (long[]){1, 1}, &c), 0);
    cr_assert_eq(conc_banker_request(a, (long[]){1, 0}, 0), 0); /* c's r1 is now unsafe */

    green_req_t tk = {0}, w = {.c = c, .rc = 1};
    conc_green_t *gt, *gw;
    cr_assert_eq(conc_go(&gt, ticker, &tk), 0);
    cr_assert_eq(conc_go(&gw, green_request, &w), 0);
    cr_assert_eq(conc_green_join(gw, 10.0), 0);
    atomic_store(&tk.stop, 1);
    cr_assert_eq(conc_green_join(gt, 10.0), 0);
    cr_assert_eq(atomic_load(&w.rc), CONC_ETIMEDOUT);
    tu_assert_timeout(w.dt, 0.2);
    cr_assert_geq(atomic_load(&tk.ticks), 40, "ticker: %ld ticks: the request blocked the hub",
                  atomic_load(&tk.ticks));

    /* kill cuts the wait: nothing granted */
    green_req_t k = {.c = c, .rc = 1};
    conc_green_t *gk;
    cr_assert_eq(conc_go(&gk, green_request_forever, &k), 0);
    conc_sleep(0.02);
    cr_assert(atomic_load(&k.started));
    cr_assert_eq(conc_green_kill(gk, true, 5.0), 0);
    cr_assert_eq(atomic_load(&k.rc), CONC_EKILLED);

    /* a Timeout scope cuts it */
    green_req_t s = {.c = c, .rc = 1};
    conc_green_t *gs;
    cr_assert_eq(conc_go(&gs, green_request_scoped, &s), 0);
    cr_assert_eq(conc_green_join(gs, 10.0), 0);
    cr_assert_eq(atomic_load(&s.rc), CONC_ETIMEDOUT);

    long held[2];
    conc_banker_held(c, held);
    cr_assert_arr_eq(held, ((long[]){0, 0}), sizeof held);
    /* a green request granted by a release from another context */
    green_req_t g2 = {.c = c, .rc = 1};
    conc_green_t *gg;
    cr_assert_eq(conc_go(&gg, green_request_forever, &g2), 0);
    conc_sleep(0.02);
    cr_assert_eq(atomic_load(&g2.rc), 1);
    cr_assert_eq(conc_banker_release(a, (long[]){1, 0}), 0);
    cr_assert_eq(conc_green_join(gg, 10.0), 0);
    cr_assert_eq(atomic_load(&g2.rc), 0);
    cr_assert_eq(conc_banker_release(c, (long[]){0, 1}), 0);

    cr_assert_eq(conc_banker_unclaim(a), 0);
    cr_assert_eq(conc_banker_unclaim(c), 0, "no waiter left behind");
    cr_assert_eq(conc_banker_free(b), 0);
    conc_green_free(gt);
    conc_green_free(gw);
    conc_green_free(gk);
    conc_green_free(gs);
    conc_green_free(gg);
}

/* ------------------------------------------------------------ stress */

#define SC 16 /* clients */
#define SM 4  /* resource types */
static const long st_total[SM] = {6, 5, 7, 4};

typedef struct {
    conc_banker_t *b;
    conc_banker_client_t *c[SC];
    long rounds;
    atomic_long grants, unsafe, timeouts, errors, waits;
} stress_t;

static stress_t st;

static unsigned rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) & 0x7fff;
}

static void oracle_check(void)
{
    long avail[SM], max[SC * SM], alloc[SC * SM];
    size_t n;
    conc_banker_snapshot(st.b, avail, SC, NULL, max, alloc, &n);
    bool ok = n == SC;
    for (size_t i = 0; i < SM; i++) {
        long sum = avail[i];
        for (size_t k = 0; k < n; k++) {
            sum += alloc[k * SM + i];
            if (alloc[k * SM + i] < 0 || alloc[k * SM + i] > max[k * SM + i])
                ok = false;
        }
        if (avail[i] < 0 || sum != st_total[i])
            ok = false;
    }
    if (!ok || !oracle_safe(SM, n, avail, max, alloc, NULL))
        atomic_fetch_add(&st.unsafe, 1);
}

static void stress_client(void *arg, int idx)
{
    (void)arg;
    conc_banker_client_t *c = st.c[idx];
    unsigned seed = 0x9e3779b9u * (unsigned)(idx + 1);
    long held[SM] = {0};
    long mymax[SM];
    {
        long avail[SM], mx[SC * SM];
        size_t n;
        conc_banker_snapshot(st.b, avail, SC, NULL, mx, NULL, &n);
        memcpy(mymax, mx + (size_t)idx * SM, sizeof mymax);
    }
    for (long r = 0; r < st.rounds; r++) {
        /* ask for the rest of the claim in a few random steps */
        for (int step = 0; step < 3; step++) {
            long req[SM];
            bool any = false;
            for (int i = 0; i < SM; i++) {
                long need = mymax[i] - held[i];
                req[i] = step == 2 ? need : (long)(rnd(&seed) % (unsigned)(need + 1));
                any |= req[i] != 0;
            }
            if (!any)
                continue;
            if (conc_banker_query(c, req) != 0)
                atomic_fetch_add(&st.waits, 1); /* (probably) waits */
            int rc = conc_banker_request(c, req, 20.0);
            if (rc == CONC_ETIMEDOUT) {
                atomic_fetch_add(&st.timeouts, 1); /* a deadlock would show here */
                break;
            }
            if (rc != 0) {
                atomic_fetch_add(&st.errors, 1);
                break;
            }
            for (int i = 0; i < SM; i++)
                held[i] += req[i];
            atomic_fetch_add(&st.grants, 1);
            oracle_check();
            if (rnd(&seed) % 4 == 0)
                sched_yield();
        }
        /* give back: sometimes a part first, then the rest */
        long part[SM];
        for (int i = 0; i < SM; i++)
            part[i] = held[i] / 2;
        if (conc_banker_release(c, part) != 0)
            atomic_fetch_add(&st.errors, 1);
        for (int i = 0; i < SM; i++)
            held[i] -= part[i];
        if (conc_banker_release(c, held) != 0)
            atomic_fetch_add(&st.errors, 1);
        memset(held, 0, sizeof held);
    }
}

Test(banker, stress_16_clients_stay_safe, .timeout = 120)
{
    memset(&st, 0, sizeof st);
    cr_assert_eq(conc_banker_new(&st.b, SM, st_total), 0);
    unsigned seed = 12345;
    for (int k = 0; k < SC; k++) {
        long max[SM];
        for (int i = 0; i < SM; i++) /* big claims: plenty of unsafe requests */
            max[i] = st_total[i] / 2 + (long)(rnd(&seed) % (unsigned)(st_total[i] / 2 + 1));
        cr_assert_eq(conc_banker_claim(st.b, max, &st.c[k]), 0);
    }
    st.rounds = tu_iters(1000);
    double t0 = tu_now();
    tu_run_threads(SC, stress_client, NULL);
    double dt = tu_now() - t0;
    cr_assert_eq(atomic_load(&st.errors), 0);
    cr_assert_eq(atomic_load(&st.timeouts), 0, "a request waited 20 s: deadlock?");
    cr_assert_eq(atomic_load(&st.unsafe), 0, "%ld snapshots failed the oracle", atomic_load(&st.unsafe));
    cr_assert_geq(atomic_load(&st.grants), SC * st.rounds);
    long avail[SM];
    size_t n;
    conc_banker_snapshot(st.b, avail, 0, NULL, NULL, NULL, &n);
    cr_assert_arr_eq(avail, st_total, sizeof avail, "everything came back");
    for (int k = 0; k < SC; k++)
        cr_assert_eq(conc_banker_unclaim(st.c[k]), 0);
    cr_assert_eq(conc_banker_free(st.b), 0);
    TU_TRACE("stress: %ld grants (%ld waited) in %.2fs", atomic_load(&st.grants), atomic_load(&st.waits), dt);
    cr_assert_gt(atomic_load(&st.waits), 0, "no request ever had to wait: not a test of the banker");
    (void)dt;
}

/* The same with 8 green threads on one hub and 8 OS threads. */
static void *green_client(void *arg)
{
    stress_client(NULL, (int)(intptr_t)arg);
    return NULL;
}

static void stress_client_upper(void *arg, int idx)
{
    stress_client(arg, SC / 2 + idx);
}

Test(banker, stress_green_and_threads, .timeout = 120)
{
    memset(&st, 0, sizeof st);
    cr_assert_eq(conc_banker_new(&st.b, SM, st_total), 0);
    unsigned seed = 777;
    for (int k = 0; k < SC; k++) {
        long max[SM];
        for (int i = 0; i < SM; i++)
            max[i] = st_total[i] / 2 + (long)(rnd(&seed) % (unsigned)(st_total[i] / 2 + 1));
        cr_assert_eq(conc_banker_claim(st.b, max, &st.c[k]), 0);
    }
    st.rounds = tu_iters(100);
    conc_green_t *g[SC / 2];
    for (int k = 0; k < SC / 2; k++)
        cr_assert_eq(conc_go(&g[k], green_client, (void *)(intptr_t)k), 0);
    static tu_bunch_t bunch;
    tu_bunch_start(&bunch, SC / 2, stress_client_upper, NULL);
    cr_assert_eq(conc_green_joinall(g, SC / 2, 100.0), 0);
    tu_bunch_join(&bunch);
    cr_assert_eq(atomic_load(&st.errors), 0);
    cr_assert_eq(atomic_load(&st.timeouts), 0);
    cr_assert_eq(atomic_load(&st.unsafe), 0);
    for (int k = 0; k < SC; k++)
        cr_assert_eq(conc_banker_unclaim(st.c[k]), 0);
    for (int k = 0; k < SC / 2; k++)
        conc_green_free(g[k]);
    cr_assert_eq(conc_banker_free(st.b), 0);
}
