/*
 * tests/pool_remote_test.c — the process pool's side of remote executors
 * (src/pool/remote.c, used by libconc_mpi): a task run into a result blob
 * and back into the future; malformed tasks and blobs (they come from
 * another process, maybe another machine) fail cleanly with CONC_EBROKEN.
 * In libconc, so it runs in every build, sanitizers included.
 */
#include "test_util.h"

#include "futures/internal.h"
#include "pool/internal.h"
#include "pool/remote.h"

TestSuite(pool_remote, .timeout = TU_TIMEOUT);

static int sq(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    int x = *(const int *)arg;
    if (x == 13)
        return conc_fail(CONC_ERANGE, "unlucky %d", x), 0;
    int y = x * x;
    if (x == 7) /* a different length */
        return conc_pool_return(out, &y, 2);
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(sq);

static void *wsq(void *a) { return (void *)((uintptr_t)a * (uintptr_t)a); }
CONC_REGISTER(wsq);

static conc_future_t *running_future(void)
{
    conc_future_t *f;
    cr_assert_eq(conc_future_new(&f), 0);
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), 1);
    return f;
}

/* Encode a task (as api.c does for a remote backend) and run it. */
static void run(const conc_registration_t *reg, uint32_t kind, const void *items, size_t item_size, size_t n,
                void **buf, size_t *cap, size_t *used)
{
    task_t *t;
    cr_assert_eq(conc__task_new(NULL, &t, reg, kind, items, item_size, n, false), 0);
    *used = 0;
    cr_assert_eq(conc__pool_remote_run(t->wire, t->wirelen, buf, cap, used), 0);
    conc__task_free(t);
}

Test(pool_remote, bytes_round_trip)
{
    void *buf = NULL;
    size_t cap = 0, used;
    int x = 9;
    run(conc_registry_find("sq"), K_BYTES, &x, sizeof x, 1, &buf, &cap, &used);
    conc_future_t *f = running_future();
    conc__pool_remote_complete(f, K_BYTES, 1, buf, used);
    const void *d;
    size_t n;
    cr_assert_eq(conc_future_bytes(f, 0, &d, &n), 0);
    cr_assert_eq(n, sizeof(int));
    cr_assert_eq(*(const int *)d, 81);
    conc_future_free(f);
    /* a failure: code and message */
    x = 13;
    run(conc_registry_find("sq"), K_BYTES, &x, sizeof x, 1, &buf, &cap, &used);
    f = running_future();
    conc__pool_remote_complete(f, K_BYTES, 1, buf, used);
    cr_assert_eq(conc_future_bytes(f, 0, &d, &n), CONC_EFAILED);
    int code;
    const char *msg;
    conc_future_exception(f, 0, &code, &msg);
    cr_assert_eq(code, CONC_ERANGE);
    cr_assert_str_eq(msg, "unlucky 13");
    conc_future_free(f);
    free(buf);
}

Test(pool_remote, word_round_trip)
{
    void *buf = NULL;
    size_t cap = 0, used;
    uint64_t v = 12;
    run(conc_registry_find("wsq"), K_WORD, &v, 8, 1, &buf, &cap, &used);
    conc_future_t *f = running_future();
    conc__pool_remote_complete(f, K_WORD, 1, buf, used);
    void *r;
    cr_assert_eq(conc_future_result(f, 0, &r), 0);
    cr_assert_eq((uintptr_t)r, 144);
    conc_future_free(f);
    free(buf);
}

Test(pool_remote, chunk_uniform_table_and_failures)
{
    enum { N = 40 };
    int in[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    void *buf = NULL;
    size_t cap = 0, used;
    run(conc_registry_find("sq"), K_CHUNK, in, sizeof(int), N, &buf, &cap, &used);
    conc_future_t *f = running_future();
    conc__pool_remote_complete(f, K_CHUNK, N, buf, used);
    void *r;
    cr_assert_eq(conc_future_result(f, 0, &r), 0);
    const cres_t *c = r;
    cr_assert_eq(c->count, N);
    cr_assert_eq(c->nfail, 1);
    for (size_t j = 0; j < N; j++) {
        uint64_t off;
        uint32_t len;
        int32_t code = cres_item(c, j, &off, &len);
        const unsigned char *d = cres_data((cres_t *)c) + off;
        if (j == 13) {
            cr_assert_eq(code, CONC_ERANGE);
            cr_assert_str_eq((const char *)d, "unlucky 13");
        } else if (j == 7) {
            cr_assert_eq(len, 2);
        } else {
            cr_assert_eq(code, 0);
            cr_assert_eq(len, 4);
            int v;
            memcpy(&v, d, sizeof v); /* after item 7's 2 bytes: unaligned */
            cr_assert_eq(v, (int)(j * j));
        }
    }
    conc_future_free(f);
    /* a chunk of 20 ordinary items stays uniform (no table) */
    run(conc_registry_find("sq"), K_CHUNK, in + 14, sizeof(int), 20, &buf, &cap, &used);
    conc__rblob_t h;
    memcpy(&h, buf, sizeof h);
    cr_assert_eq(h.table, 0);
    cr_assert_eq(h.unilen, 4);
    free(buf);
}

static int broken_code(const void *blob, size_t len, uint32_t kind, uint32_t count)
{
    conc_future_t *f = running_future();
    conc__pool_remote_complete(f, kind, count, blob, len);
    int code = 0;
    cr_assert(conc_future_done(f));
    conc_future_exception(f, 0, &code, NULL);
    conc_future_free(f);
    return code;
}

Test(pool_remote, malformed_blobs_fail_with_ebroken)
{
    enum { N = 16 };
    int in[N];
    for (int i = 0; i < N; i++)
        in[i] = i + 10; /* item 3 (13) fails: the blob has a table */
    void *buf = NULL;
    size_t cap = 0, used;
    run(conc_registry_find("sq"), K_CHUNK, in, sizeof(int), N, &buf, &cap, &used);
    unsigned char *good = malloc(used);
    memcpy(good, buf, used);
    conc__rblob_t h;
    memcpy(&h, good, sizeof h);
    cr_assert_eq(h.table, 1);
    cr_assert_eq(broken_code(good, used, K_CHUNK, N), 0);          /* the real one is fine */
    cr_assert_eq(broken_code(good, sizeof h - 1, K_CHUNK, N), CONC_EBROKEN); /* truncated header */
    cr_assert_eq(broken_code(good, used - 8, K_CHUNK, N), CONC_EBROKEN);     /* truncated table */
    cr_assert_eq(broken_code(good, used, K_CHUNK, N + 1), CONC_EBROKEN);     /* wrong count */
    cr_assert_eq(broken_code(NULL, 0, K_CHUNK, N), CONC_EBROKEN);
    unsigned char *bad = malloc(used);
    /* a data length that lies */
    memcpy(bad, good, used);
    ((conc__rblob_t *)bad)->datalen += 4;
    cr_assert_eq(broken_code(bad, used, K_CHUNK, N), CONC_EBROKEN);
    /* a table whose lengths do not add up */
    memcpy(bad, good, used);
    witem_t *tab = (witem_t *)(bad + sizeof h + PAD8((size_t)h.datalen));
    tab[0].len += 1;
    cr_assert_eq(broken_code(bad, used, K_CHUNK, N), CONC_EBROKEN);
    /* a failure code that is positive, and a message without its NUL */
    memcpy(bad, good, used);
    tab[3].code = 5;
    cr_assert_eq(broken_code(bad, used, K_CHUNK, N), CONC_EBROKEN);
    memcpy(bad, good, used);
    size_t off = 0;
    for (int j = 0; j < 3; j++)
        off += tab[j].len;
    bad[sizeof h + off + tab[3].len - 1] = 'x';
    cr_assert_eq(broken_code(bad, used, K_CHUNK, N), CONC_EBROKEN);
    /* random damage never crashes (ASan watches) */
    srand(7);
    for (int i = 0; i < 3000; i++) {
        memcpy(bad, good, used);
        for (int k = 0; k < 1 + i % 4; k++)
            bad[(size_t)rand() % used] = (unsigned char)rand();
        broken_code(bad, (size_t)rand() % (used + 1), K_CHUNK, N);
    }
    free(bad);
    free(good);
    free(buf);
}

Test(pool_remote, malformed_tasks_are_refused)
{
    int x = 3;
    task_t *t;
    cr_assert_eq(conc__task_new(NULL, &t, conc_registry_find("sq"), K_BYTES, &x, sizeof x, 1, false), 0);
    void *buf = NULL;
    size_t cap = 0, used = 0;
    cr_assert_eq(conc__pool_remote_run(t->wire, 8, &buf, &cap, &used), CONC_EBROKEN);
    unsigned char *w = malloc(t->wirelen);
    memcpy(w, t->wire, t->wirelen);
    ((wtask_t *)w)->datalen = 1u << 30;
    cr_assert_eq(conc__pool_remote_run(w, t->wirelen, &buf, &cap, &used), CONC_EBROKEN);
    memcpy(w, t->wire, t->wirelen);
    ((wtask_t *)w)->kind = 99;
    cr_assert_eq(conc__pool_remote_run(w, t->wirelen, &buf, &cap, &used), CONC_EBROKEN);
    used = 3; /* misaligned */
    cr_assert_eq(conc__pool_remote_run(t->wire, t->wirelen, &buf, &cap, &used), CONC_EBROKEN);
    /* an unknown function fails the item, not the worker */
    memcpy(w, t->wire, t->wirelen);
    w[sizeof(wtask_t)] = 'Q';
    used = 0;
    cr_assert_eq(conc__pool_remote_run(w, t->wirelen, &buf, &cap, &used), 0);
    conc_future_t *f = running_future();
    conc__pool_remote_complete(f, K_BYTES, 1, buf, used);
    int code;
    conc_future_exception(f, 0, &code, NULL);
    cr_assert_eq(code, CONC_EINVAL);
    conc_future_free(f);
    free(w);
    free(buf);
    conc__task_free(t);
}
