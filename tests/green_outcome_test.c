/* What a wait on a green thread reports, and what nothing may change
 * afterwards: the outcomes rule of conc/base.h applied to green threads
 * (gevent's Greenlet.get / successful / exception: test__greenlet.py's
 * TestBasic and TestStuff), links that fail (gevent's hub reports them and
 * the greenlet's value stays), a wait whose time is up never switches, and
 * timeout scopes that outlive their function (debug report). */
#include "test_util.h"

#include "conc/green.h"

#define PTR(x) ((void *)(uintptr_t)(x))

TestSuite(green_outcome);

/* ---- one code per outcome: failed / timed out / killed waiter */

static void *fails_with_timeout_code(void *arg)
{
    (void)arg;
    conc_sleep(0.01);
    return conc_fail(CONC_ETIMEDOUT, "the task's own timeout");
}

static void *sleeps(void *arg)
{
    conc_sleep(*(double *)arg);
    return PTR(7);
}

typedef struct {
    conc_green_t *target;
    atomic_int rc;
} getter_t;

static void *getter(void *arg)
{
    getter_t *x = arg;
    void *r;
    atomic_store(&x->rc, conc_green_get(x->target, CONC_FOREVER, &r));
    return NULL;
}

Test(green_outcome, failed_timed_out_and_killed_are_told_apart, .timeout = TU_TIMEOUT)
{
    /* A task that failed with CONC_ETIMEDOUT: the wait says CONC_EFAILED,
     * so `while (get(...) == CONC_ETIMEDOUT)` loops end. */
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fails_with_timeout_code, NULL), 0);
    void *r = PTR(1);
    cr_assert_eq(conc_green_get(g, 5.0, &r), CONC_EFAILED);
    cr_assert_eq(r, PTR(1));
    const char *msg = NULL;
    cr_assert_eq(conc_green_exception(g, &msg), CONC_ETIMEDOUT);
    cr_assert_str_eq(msg, "the task's own timeout");
    cr_assert_eq(conc_green_join(g, 0), 0, "join of an ended green thread succeeds");
    cr_assert_not(conc_green_successful(g));
    cr_assert_eq(conc_green_free(g), 0);

    /* The wait's own timeout. */
    double long_sleep = 10;
    cr_assert_eq(conc_go(&g, sleeps, &long_sleep), 0);
    cr_assert_eq(conc_green_get(g, 0.02, &r), CONC_ETIMEDOUT);
    cr_assert_eq(conc_green_exception(g, NULL), 0);

    /* A Timeout scope on the waiter. */
    cr_assert_eq(conc_timeout_begin(0.02), 0);
    cr_assert_eq(conc_green_get(g, CONC_FOREVER, &r), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);

    /* The waiter itself killed. */
    getter_t x = {.target = g};
    atomic_store(&x.rc, 99);
    conc_green_t *w;
    cr_assert_eq(conc_go(&w, getter, &x), 0);
    conc_yield();
    cr_assert_eq(conc_green_kill(w, true, 5.0), 0);
    cr_assert_eq(atomic_load(&x.rc), CONC_EKILLED);
    cr_assert_eq(conc_green_free(w), 0);

    /* The target killed: GreenletExit is a successful end, get gives NULL. */
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    r = PTR(1);
    cr_assert_eq(conc_green_get(g, 0, &r), 0);
    cr_assert_null(r);
    cr_assert(conc_green_successful(g));
    cr_assert(conc_green_killed(g));
    cr_assert_eq(conc_green_exception(g, NULL), 0);
    cr_assert_eq(conc_green_free(g), 0);
}

/* ---- links: one that fails changes nothing and is reported */

static void *returns_5(void *arg)
{
    (void)arg;
    return PTR(5);
}

static void *fails_eof(void *arg)
{
    (void)arg;
    return conc_fail(CONC_EEOF, "original");
}

typedef struct {
    atomic_int calls;
    atomic_int code_seen;
    atomic_int successful_seen;
} seen_t;

static void failing_link(conc_green_t *g, void *arg)
{
    (void)g;
    (void)arg;
    conc_fail(CONC_EINVAL, "link broke");
}

static void clearing_link(conc_green_t *g, void *arg)
{
    (void)g;
    (void)arg;
    conc_fail_clear();
}

static void observing_link(conc_green_t *g, void *arg)
{
    seen_t *s = arg;
    atomic_store(&s->code_seen, conc_green_exception(g, NULL));
    atomic_store(&s->successful_seen, conc_green_successful(g));
    atomic_fetch_add(&s->calls, 1);
}

static char err_out[4096];

static void start_capture(int *saved, FILE **tmp)
{
    *tmp = tmpfile();
    cr_assert_not_null(*tmp);
    fflush(stderr);
    *saved = dup(2);
    dup2(fileno(*tmp), 2);
}

static void end_capture(int saved, FILE *tmp)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(err_out, 1, sizeof err_out - 1, tmp);
    err_out[n] = 0;
    fclose(tmp);
}

Test(green_outcome, a_failing_link_changes_nothing_and_is_reported, .timeout = TU_TIMEOUT)
{
    int saved;
    FILE *tmp;
    start_capture(&saved, &tmp);

    /* a green thread that succeeded */
    seen_t s1 = {0};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, returns_5, NULL), 0);
    conc_green_link(g, failing_link, NULL);
    conc_green_link(g, observing_link, &s1);
    void *r = NULL;
    int rc_ok = conc_green_get(g, 5.0, &r);
    bool succ_ok = conc_green_successful(g);
    int exc_ok = conc_green_exception(g, NULL);
    /* a link added after the end runs at once, on the caller */
    conc_green_link(g, failing_link, NULL);
    int mine = conc_failure(NULL);
    conc_green_free(g);

    /* a green thread that failed: a link clearing or replacing the
     * failure does not change it */
    seen_t s2 = {0};
    cr_assert_eq(conc_go(&g, fails_eof, NULL), 0);
    conc_green_link(g, clearing_link, NULL);
    conc_green_link(g, failing_link, NULL);
    conc_green_link(g, observing_link, &s2);
    int rc_fail = conc_green_get(g, 5.0, NULL);
    const char *msg = NULL;
    int exc_fail = conc_green_exception(g, &msg);
    char msg_copy[64];
    snprintf(msg_copy, sizeof msg_copy, "%s", msg ? msg : "(null)");
    conc_green_free(g);

    end_capture(saved, tmp);
    cr_assert_eq(rc_ok, 0, "a link's conc_fail rewrote a successful outcome");
    cr_assert_eq(r, PTR(5));
    cr_assert(succ_ok);
    cr_assert_eq(exc_ok, 0);
    cr_assert_eq(atomic_load(&s1.calls), 1);
    cr_assert_eq(atomic_load(&s1.code_seen), 0, "a later link saw the earlier link's failure");
    cr_assert_eq(atomic_load(&s1.successful_seen), 1);
    cr_assert_eq(mine, 0, "a link run on the caller left its failure on the caller");

    cr_assert_eq(rc_fail, CONC_EFAILED);
    cr_assert_eq(exc_fail, CONC_EEOF);
    cr_assert_str_eq(msg_copy, "original");
    cr_assert_eq(atomic_load(&s2.code_seen), CONC_EEOF);
    cr_assert_eq(atomic_load(&s2.successful_seen), 0);

    cr_assert_not_null(strstr(err_out, "link broke"), "a failing link was not reported: %s", err_out);
    cr_assert_not_null(strstr(err_out, conc_errname(CONC_EINVAL)), "%s", err_out);
}

/* ---- a wait whose time is already up is a pure poll */

static atomic_int ran;

static void *mark_ran(void *arg)
{
    (void)arg;
    atomic_store(&ran, 1);
    return PTR(3);
}

static void *poll_from_green(void *arg)
{
    (void)arg;
    conc_green_t *h;
    if (conc_go(&h, mark_ran, NULL) != 0)
        return PTR(9);
    int rc = conc_green_join(h, 0);
    int ran_now = atomic_load(&ran);
    conc_green_join(h, 5.0);
    conc_green_free(h);
    return PTR(rc == CONC_ETIMEDOUT && !ran_now ? 1 : 2);
}

Test(green_outcome, zero_timeout_never_switches, .timeout = TU_TIMEOUT)
{
    atomic_store(&ran, 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, mark_ran, NULL), 0);
    void *r = NULL;
    cr_assert_eq(conc_green_get(g, 0, &r), CONC_ETIMEDOUT);
    cr_assert_eq(conc_green_join(g, 0), CONC_ETIMEDOUT);
    cr_assert_eq(atomic_load(&ran), 0, "a poll switched to the green thread and ran it");
    cr_assert_not(conc_green_started(g));
    /* killed before it ran: it ends at once, never runs */
    cr_assert_eq(conc_green_kill(g, true, 0), 0);
    cr_assert(conc_green_dead(g));
    cr_assert_eq(atomic_load(&ran), 0);
    cr_assert(conc_green_killed(g));
    cr_assert_eq(conc_green_free(g), 0);

    /* and from inside a green thread */
    atomic_store(&ran, 0);
    conc_green_t *a;
    cr_assert_eq(conc_go(&a, poll_from_green, NULL), 0);
    cr_assert_eq(conc_green_get(a, 5.0, &r), 0);
    cr_assert_eq(r, PTR(1), "a poll from a green thread ran the polled one (or did not time out)");
    cr_assert_eq(conc_green_free(a), 0);
}

/* ---- a timeout scope that outlives its function is reported (debug) */

static conc_event_t never = CONC_EVENT_INIT;

/* Opens a scope and returns early on one path (the bug). */
__attribute__((noinline)) static int leaky_fetch(int early)
{
    int rc = conc_timeout_begin(0.05);
    if (early)
        return rc; /* the scope stays open */
    rc = conc_event_wait(&never, CONC_FOREVER);
    conc_timeout_end();
    return rc + 1;
}

__attribute__((noinline)) static int wait_deeper(void)
{
    return conc_event_wait(&never, CONC_FOREVER);
}

/* Correct: the wait happens inside the opener (through a helper). */
__attribute__((noinline)) static int tidy_fetch(void)
{
    int rc = conc_timeout_begin(0.03);
    if (rc == 0)
        rc = wait_deeper();
    int fired = conc_timeout_end();
    return rc == CONC_ETIMEDOUT && fired == 1 ? 0 : 1;
}

__attribute__((noinline)) static int scoped_fetch(bool early)
{
    CONC_TIMEOUT_SCOPE(0.03);
    if (early)
        return 7; /* the scope ends here by itself */
    return conc_event_wait(&never, CONC_FOREVER);
}

Test(green_outcome, leaked_timeout_scope_is_reported, .timeout = TU_TIMEOUT)
{
    setenv("CONC_DEBUG", "1", 1); /* before the first scope of this process */
    int saved;
    FILE *tmp;
    start_capture(&saved, &tmp);
    int tidy = tidy_fetch();
    int early = leaky_fetch(1);
    /* an unrelated wait later: cut by the leaked scope, and reported */
    int later = conc_event_wait(&never, 1.0);
    int left = conc_timeout_end();
    end_capture(saved, tmp);
    cr_assert_eq(tidy, 0);
    cr_assert_eq(early, 0);
    cr_assert_eq(later, CONC_ETIMEDOUT);
    cr_assert_eq(left, 1, "the leaked scope was not the one that fired");
    const char *hit = strstr(err_out, "a timeout scope opened in");
    cr_assert_not_null(hit, "the leaked scope was not reported: '%s'", err_out);
    cr_assert_null(strstr(hit + 1, "a timeout scope opened in"), "reported more than once: %s", err_out);
}

Test(green_outcome, tidy_scopes_are_not_reported, .timeout = TU_TIMEOUT)
{
    setenv("CONC_DEBUG", "1", 1);
    int saved;
    FILE *tmp;
    start_capture(&saved, &tmp);
    int a = tidy_fetch();
    int b = leaky_fetch(0);
    int c = scoped_fetch(true);
    int d = scoped_fetch(false);
    int e = conc_timeout_end(); /* nothing left open */
    int f = conc_event_wait(&never, 0.02);
    end_capture(saved, tmp);
    cr_assert_eq(a, 0);
    cr_assert_eq(b, CONC_ETIMEDOUT + 1);
    cr_assert_eq(c, 7);
    cr_assert_eq(d, CONC_ETIMEDOUT);
    cr_assert_eq(e, CONC_EPERM, "CONC_TIMEOUT_SCOPE left a scope open");
    cr_assert_eq(f, CONC_ETIMEDOUT);
    cr_assert_null(strstr(err_out, "timeout scope"), "a tidy scope was reported: %s", err_out);
}

static void *leak_on_green(void *arg)
{
    (void)arg;
    int early = leaky_fetch(1);
    int later = conc_event_wait(&never, 1.0);
    int left = conc_timeout_end();
    return PTR(early == 0 && later == CONC_ETIMEDOUT && left == 1 ? 1 : 2);
}

Test(green_outcome, leaked_timeout_scope_on_a_green_thread_is_reported, .timeout = TU_TIMEOUT)
{
    setenv("CONC_DEBUG", "1", 1);
    int saved;
    FILE *tmp;
    start_capture(&saved, &tmp);
    conc_green_t *g;
    void *r = NULL;
    int rc = conc_go(&g, leak_on_green, NULL);
    if (rc == 0)
        rc = conc_green_get(g, 5.0, &r);
    end_capture(saved, tmp);
    cr_assert_eq(rc, 0);
    cr_assert_eq(r, PTR(1));
    cr_assert_not_null(strstr(err_out, "a timeout scope opened in"), "not reported: '%s'", err_out);
    cr_assert_eq(conc_green_free(g), 0);
}
