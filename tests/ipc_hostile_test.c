/* Shared memory is untrusted input (issue 11, section 2): a peer that can
 * map a segment writes whatever it likes into it, at any moment. The
 * victim must never read or write outside its mappings, loop for ever or
 * crash: it gets CONC_EBROKEN (or a documented code) instead. The two
 * attacks of the issue are here as regressions — an unaligned queue
 * position, and a capacity flipped during conc_mpqueue_attach — beside
 * the other fields each structure checks. The "peer" is a second mapping
 * of the same segment (what another process would have). */
#include "test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "conc/ipc_queue.h"
#include "ipc/internal.h"
#include "ipc/queue_internal.h"

TU_MAIN_WITH_PROCESS_GUARD()

#define CAP 8192u

/* The peer's view: its own mapping of the queue's segment. */
typedef struct {
    conc__mpq_shm_t *s;
    unsigned char *ring;
    size_t size;
} peer_t;

static peer_t peer_map(conc_mpqueue_t *q)
{
    int fd = conc_mpqueue_fd(q);
    cr_assert_geq(fd, 0);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    cr_assert_neq(p, MAP_FAILED);
    peer_t pe = {p, (unsigned char *)p + ((conc__mpq_shm_t *)p)->data_off, (size_t)st.st_size};
    return pe;
}

static void peer_unmap(peer_t *pe) { munmap(pe->s, pe->size); }

#define STORE(field, v) atomic_store((_Atomic __typeof__(field) *)&(field), (v))

/* The ring is the last part of the segment: put a guard page right after
 * the victim's mapping so a write past the ring faults instead of landing
 * silently in whatever follows. Returns a queue attached through that
 * mapping (the victim). */
static conc_mpqueue_t *victim_with_guard(conc_mpqueue_t *q)
{
    conc_mpqueue_t *v;
    cr_assert_eq(conc_mpqueue_attach(&v, conc_mpqueue_fd(q)), 0);
    unsigned char *end = (unsigned char *)v->shm + v->map_size;
    void *g = mmap(end, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    (void)g; /* if the page is taken, it is someone's mapping: ASan or the compare below tells */
    return v;
}

/* Attack 1 of the issue: head/tail set to a position that is not a
 * multiple of 8, where the next put would write its 8-byte end marker 4
 * bytes past the ring. */
Test(ipc_hostile, queue_unaligned_tail_put_is_broken, .timeout = 30)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, CAP), 0);
    conc_mpqueue_t *v = victim_with_guard(q);
    peer_t pe = peer_map(q);
    uint64_t bad = 5 * (uint64_t)CAP - 4; /* ring offset cap - 4 */
    STORE(pe.s->head, bad);
    STORE(pe.s->tail, bad);
    STORE(pe.s->put.peer_pos, bad);
    unsigned char m[16] = "0123456789abcde";
    cr_assert_eq(conc_mpqueue_put(v, m, 4, false, 0), CONC_EBROKEN);
    cr_assert_eq(conc_mpqueue_put(v, m, 4, true, 0.1), CONC_EBROKEN, "broken for good");
    size_t n;
    unsigned char b[16];
    cr_assert_eq(conc_mpqueue_get(v, b, sizeof b, &n, false, 0), CONC_EBROKEN);
    conc_mpqueue_free(v);

    /* the consumer side: an unaligned head */
    cr_assert_eq(conc_mpqueue_attach(&v, conc_mpqueue_fd(q)), 0);
    STORE(pe.s->tail, (uint64_t)64);
    STORE(pe.s->head, (uint64_t)4);
    cr_assert_eq(conc_mpqueue_get(v, b, sizeof b, &n, false, 0), CONC_EBROKEN);
    conc_mpqueue_free(v);
    peer_unmap(&pe);
    conc_mpqueue_free(q);
}

Test(ipc_hostile, queue_positions_out_of_invariant, .timeout = 30)
{
    struct {
        uint64_t head, tail;
    } cases[] = {
        {64, 0},                            /* tail behind head */
        {0, (uint64_t)CAP + 64},           /* more than a ring ahead */
        {0, UINT64_MAX & ~(uint64_t)7},    /* far away */
        {UINT64_MAX & ~(uint64_t)7, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        conc_mpqueue_t *q, *v;
        cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, CAP), 0);
        cr_assert_eq(conc_mpqueue_attach(&v, conc_mpqueue_fd(q)), 0);
        peer_t pe = peer_map(q);
        STORE(pe.s->head, cases[i].head);
        STORE(pe.s->tail, cases[i].tail);
        STORE(pe.s->put.peer_pos, cases[i].head);
        cr_assert_eq(conc_mpqueue_put(v, "x", 1, false, 0), CONC_EBROKEN, "case %zu", i);
        peer_unmap(&pe);
        conc_mpqueue_free(v);
        conc_mpqueue_free(q);
    }
}

/* A message header that claims more bytes than the ring holds. */
Test(ipc_hostile, queue_bad_message_header, .timeout = 30)
{
    conc_mpqueue_t *q, *v;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, CAP), 0);
    cr_assert_eq(conc_mpqueue_put(q, "abc", 3, false, 0), 0);
    cr_assert_eq(conc_mpqueue_attach(&v, conc_mpqueue_fd(q)), 0);
    peer_t pe = peer_map(q);
    STORE(*(uint64_t *)pe.ring, (uint64_t)0xffffffffu | CONC__MPQ_MARK << 32);
    void *d = NULL;
    size_t n;
    cr_assert_eq(conc_mpqueue_get_alloc(v, &d, &n, false, 0), CONC_EBROKEN);
    cr_assert_null(d);
    peer_unmap(&pe);
    conc_mpqueue_free(v);
    conc_mpqueue_free(q);
}

/* A dead holder's journal (what a takeover replays) with a bad position. */
Test(ipc_hostile, queue_bad_journal_on_takeover, .timeout = 30)
{
    conc_mpqueue_t *q, *v;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, CAP), 0);
    cr_assert_eq(conc_mpqueue_attach(&v, conc_mpqueue_fd(q)), 0);
    peer_t pe = peer_map(q);
    STORE(pe.s->put.j.pos, (uint64_t)CAP - 4);
    STORE(pe.s->put.j.size, (uint64_t)8);
    STORE(pe.s->put.j.valid, 1u);
    STORE(pe.s->put.revoked, 1u);
    STORE(pe.s->put.lock, (uint64_t)0x7ffffff0u); /* a thread id no thread has */
    double t0 = tu_now();
    cr_assert_eq(conc_mpqueue_put(v, "x", 1, true, 5.0), CONC_EBROKEN);
    cr_assert_lt(tu_now() - t0, 2.0);
    peer_unmap(&pe);
    conc_mpqueue_free(v);
    conc_mpqueue_free(q);
}

/* A lock word forged to name the victim's own thread: not a wait for
 * itself for ever. */
Test(ipc_hostile, queue_lock_forged_as_ours, .timeout = 30)
{
    conc_mpqueue_t *q, *v;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, CAP), 0);
    cr_assert_eq(conc_mpqueue_attach(&v, conc_mpqueue_fd(q)), 0);
    cr_assert_eq(conc_mpqueue_put(v, "x", 1, false, 0), 0); /* learn our word */
    peer_t pe = peer_map(q);
    STORE(pe.s->put.revoked, 1u);
    uint64_t me = (uint64_t)(uint32_t)conc__ipc_tid() |
                  (uint64_t)(conc__ipc_my_tag(true) & 0x7fffffffu) << 32;
    STORE(pe.s->put.lock, me);
    cr_assert_eq(conc_mpqueue_put(v, "y", 1, false, 0), 0);
    cr_assert_eq(conc_mpqueue_qsize(v), 2);
    peer_unmap(&pe);
    conc_mpqueue_free(v);
    conc_mpqueue_free(q);
}

/* Attack 2 of the issue: the capacity flipped during attach, between the
 * check and the use. The hook runs at exactly that point. */
static conc__mpq_shm_t *g_flip;
static void flip_cap(conc__mpq_shm_t *s)
{
    g_flip = s;
    STORE(s->cap, (uint64_t)1 << 40);
    STORE(s->map_size, (uint64_t)1 << 41);
    STORE(s->data_off, (uint64_t)1 << 30);
    STORE(s->maxsize, (uint64_t)1);
}

Test(ipc_hostile, queue_capacity_flipped_during_attach, .timeout = 30)
{
    conc_mpqueue_t *q, *v;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, CAP), 0);
    conc__mpq_attach_hook = flip_cap;
    int rc = conc_mpqueue_attach(&v, conc_mpqueue_fd(q));
    conc__mpq_attach_hook = NULL;
    cr_assert_eq(rc, 0);
    cr_assert_not_null(g_flip, "the hook ran");
    cr_assert_eq(conc_mpqueue_capacity(v), CAP, "the checked value, not the flipped one");
    cr_assert_eq(conc_mpqueue_max_message(v), CAP - 16);
    cr_assert_eq(conc_mpqueue_maxsize(v), 0);
    static unsigned char big[1 << 16];
    cr_assert_eq(conc_mpqueue_put(v, big, sizeof big, false, 0), CONC_ERANGE);
    for (int i = 0; i < 100; i++) { /* through the whole ring a few times */
        unsigned char m[100], b[100];
        memset(m, i, sizeof m);
        size_t n;
        cr_assert_eq(conc_mpqueue_put(v, m, sizeof m, false, 0), 0);
        cr_assert_eq(conc_mpqueue_put(v, m, sizeof m, false, 0), 0, "maxsize is the checked 0");
        cr_assert_eq(conc_mpqueue_get(v, b, sizeof b, &n, false, 0), 0);
        cr_assert_eq(conc_mpqueue_get(v, b, sizeof b, &n, false, 0), 0);
        cr_assert(n == sizeof m && memcmp(b, m, n) == 0);
    }
    conc_mpqueue_free(v);
    conc_mpqueue_free(q);
}

/* The same attack without a hook: a thread flips the capacity as fast as
 * it can while the victim attaches over and over. Every attach either
 * refuses the segment or gives a handle of the real capacity. */
typedef struct {
    conc__mpq_shm_t *s;
    _Atomic int stop;
    _Atomic long flips;
} flipper_t;

static void *flipper(void *arg)
{
    flipper_t *f = arg;
    while (!atomic_load_explicit(&f->stop, memory_order_relaxed)) {
        STORE(f->s->cap, (uint64_t)1 << 40);
        STORE(f->s->cap, (uint64_t)CAP);
        atomic_fetch_add_explicit(&f->flips, 1, memory_order_relaxed);
    }
    return NULL;
}

Test(ipc_hostile, queue_capacity_flipper_races_attach, .timeout = 60)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, CAP), 0);
    peer_t pe = peer_map(q);
    flipper_t f = {.s = pe.s};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, flipper, &f), 0);
    int ok = 0, refused = 0;
    double end = tu_now() + 1.0;
    for (int i = 0; i < 20000 && tu_now() < end; i++) {
        conc_mpqueue_t *v;
        int rc = conc_mpqueue_attach(&v, conc_mpqueue_fd(q));
        if (rc == CONC_EINVAL) {
            refused++;
            continue;
        }
        cr_assert_eq(rc, 0);
        cr_assert_eq(conc_mpqueue_capacity(v), CAP);
        cr_assert_eq(conc_mpqueue_put(v, "z", 1, false, 0), 0);
        size_t n;
        char b[4];
        cr_assert_eq(conc_mpqueue_get(v, b, sizeof b, &n, false, 0), 0);
        conc_mpqueue_free(v);
        ok++;
    }
    atomic_store(&f.stop, 1);
    pthread_join(th, NULL);
    fprintf(stderr, "attach raced %ld flips: %d handles, %d refusals\n", atomic_load(&f.flips), ok, refused);
    cr_assert_gt(ok + refused, 0);
    peer_unmap(&pe);
    conc_mpqueue_free(q);
}

/* ------------------------------------------------- shared primitives */

typedef struct {
    conc_plock_t lock;
    conc_pcond_t cond;
    conc_pbarrier_t barrier;
    _Atomic int calls;
} prims_t;

Test(ipc_hostile, condition_lock_offset_outside_the_mapping, .timeout = 30)
{
    prims_t *p;
    cr_assert_eq(conc_shared_alloc(sizeof *p, (void **)&p), 0);
    cr_assert_eq(conc_pcond_init(&p->cond, &p->lock), 0);
    int on_stack[16] = {0};
    int64_t offsets[] = {
        (int64_t)((char *)on_stack - (char *)&p->cond), /* the victim's stack */
        (int64_t)1 << 40, -((int64_t)1 << 40), INT64_MIN, 4 /* misaligned */,
    };
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        STORE(p->cond.offset, offsets[i]);
        cr_assert_eq(conc_pcond_acquire(&p->cond, false, CONC_FOREVER), CONC_EBROKEN, "offset %zu", i);
        cr_assert_eq(conc_pcond_notify_all(&p->cond), CONC_EBROKEN);
        cr_assert_eq(conc_pcond_wait(&p->cond, 0), CONC_EBROKEN);
        cr_assert_eq(conc_pcond_release(&p->cond), CONC_EBROKEN);
    }
    for (int i = 0; i < 16; i++)
        cr_assert_eq(on_stack[i], 0, "nothing written on our stack");
    STORE(p->cond.kind, 7);
    cr_assert_eq(conc_pcond_acquire(&p->cond, false, CONC_FOREVER), CONC_EBROKEN);
    /* back to the real lock: it works again */
    STORE(p->cond.kind, 1);
    STORE(p->cond.offset, (int64_t)((char *)&p->lock - (char *)&p->cond));
    cr_assert_eq(conc_pcond_acquire(&p->cond, true, 1.0), 0);
    cr_assert_eq(conc_pcond_release(&p->cond), 0);
    conc_shared_free(p);
}

/* A peer zeroes the condition's counters while we wait: the wait still
 * ends (a spurious wakeup at worst), it does not spin for ever. */
Test(ipc_hostile, condition_counters_zeroed, .timeout = 30)
{
    prims_t *p;
    cr_assert_eq(conc_shared_alloc(sizeof *p, (void **)&p), 0);
    cr_assert_eq(conc_pcond_init(&p->cond, &p->lock), 0);
    cr_assert_eq(conc_pcond_acquire(&p->cond, true, 1.0), 0);
    STORE(p->cond.waiting, UINT32_MAX);
    STORE(p->cond.tokens, 0u);
    /* waiting wraps to 0 on our increment: our settle sees "notified" and
     * looks for a token that never comes */
    double t0 = tu_now();
    int rc = conc_pcond_wait(&p->cond, 0.05);
    cr_assert(rc == 0 || rc == CONC_ETIMEDOUT, "rc %d", rc);
    cr_assert_lt(tu_now() - t0, 2.0);
    cr_assert(conc_plock_locked(&p->lock));
    cr_assert_eq(conc_pcond_release(&p->cond), 0);
    conc_shared_free(p);
}

static void count_call(void *arg) { atomic_fetch_add((_Atomic int *)arg, 1); }
static void evil(void *arg)
{
    (void)arg;
    abort();
}

Test(ipc_hostile, barrier_forged_action_is_never_called, .timeout = 30)
{
    prims_t *p;
    cr_assert_eq(conc_shared_alloc(sizeof *p, (void **)&p), 0);
    cr_assert_eq(conc_pbarrier_init(&p->barrier, 1, count_call, &p->calls, CONC_FOREVER), 0);
    int idx;
    cr_assert_eq(conc_pbarrier_wait(&p->barrier, CONC_BARRIER_DEFAULT, &idx), 0);
    cr_assert_eq(atomic_load(&p->calls), 1, "the real action runs");
    /* a peer points the action elsewhere (the old check compared a layout
     * tag the peer could read from the same segment) */
    p->barrier.action = evil;
    cr_assert_eq(conc_pbarrier_wait(&p->barrier, CONC_BARRIER_DEFAULT, &idx), CONC_ENOTSUP);
    cr_assert(conc_pbarrier_broken(&p->barrier));
    /* a forged count does not overflow or index anything */
    cr_assert_eq(conc_pbarrier_init(&p->barrier, 2, NULL, NULL, CONC_FOREVER), 0);
    STORE(p->barrier.count, INT32_MAX);
    cr_assert_eq(conc_pbarrier_wait(&p->barrier, 0.1, &idx), CONC_EBROKEN);
    conc_shared_free(p);
}

Test(ipc_hostile, misaligned_lock_pointer_is_einval)
{
    _Alignas(8) unsigned char raw[64] = {0};
    cr_assert_eq(conc_plock_acquire((conc_plock_t *)(void *)(raw + 4), false, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_prlock_acquire((conc_prlock_t *)(void *)(raw + 4), false, CONC_FOREVER), CONC_EINVAL);
}

/* ----------------------------------------------------- SharedMemory, Value */

Test(ipc_hostile, array_header_rewritten_after_attach, .timeout = 30)
{
    conc_array_t *a, *b;
    cr_assert_eq(conc_array_new(sizeof(int), 4, NULL, true, &a), 0);
    cr_assert_eq(conc_array_attach(conc_array_name(a), &b), 0);
    /* the header is the first 64 bytes: elem_size at 8, n at 16 */
    uint64_t *h = (uint64_t *)((char *)conc_array_ptr(a) - 64);
    STORE(h[1], (uint64_t)1 << 40);
    STORE(h[2], (uint64_t)1 << 40);
    cr_assert_eq(conc_array_len(b), 4, "the checked copy");
    cr_assert_eq(conc_array_elem_size(b), sizeof(int));
    conc_array_t *c;
    cr_assert_eq(conc_array_attach(conc_array_name(a), &c), CONC_EINVAL, "a later attach refuses it");
    conc_array_free(b);
    conc_array_free(a);
}

Test(ipc_hostile, shm_trailer_size_flipper, .timeout = 30)
{
    conc_shm_t *s;
    cr_assert_eq(conc_shm_create(NULL, 100, 0, &s), 0);
    /* the trailer's size field (offset 8 of the last 64 bytes of 192) */
    uint64_t *size = (uint64_t *)((char *)conc_shm_buf(s) + 128 + 8);
    for (int i = 0; i < 2000; i++) {
        conc_shm_t *v;
        STORE(*size, i & 1 ? (uint64_t)1 << 40 : (uint64_t)100);
        cr_assert_eq(conc_shm_attach(conc_shm_name(s), &v), 0);
        cr_assert_leq(conc_shm_size(v), 192, "never more than the mapping");
        conc_shm_close(v);
    }
    conc_shm_unlink(s);
    conc_shm_close(s);
}

/* ------------------------------------------ process-pool result messages
 * A worker writes its results into the shared result ring; the parent
 * parses them (from a private copy). A hostile worker's lengths must not
 * make the parent read past the message or assemble a result whose items
 * point outside it. */

#include "pool/internal.h"

typedef struct {
    mhdr_t h;
    wres_t r;
    witem_t tab[2];
    unsigned char data[16];
} results_msg_t;

static bool parse_one(results_msg_t *m, size_t n, uint32_t task_count, task_t **t_out)
{
    engine_t e;
    memset(&e, 0, sizeof e);
    wslot_t w;
    memset(&w, 0, sizeof w);
    e.nw = 1;
    e.w = &w;
    task_t *t = calloc(1, sizeof *t);
    cr_assert_not_null(t);
    t->id = 7;
    t->count = task_count;
    t->kind = K_CHUNK;
    w.head = w.tail = t;
    w.ninflight = 1;
    task_t *done = NULL;
    bool ok = conc__engine_parse_results(&e, (const unsigned char *)m, n, &done);
    *t_out = t;
    return ok;
}

static void free_task(task_t *t)
{
    free(t->res);
    free(t);
}

Test(ipc_hostile, pool_result_lengths_that_wrap)
{
    results_msg_t *m = calloc(1, sizeof *m); /* exact size: ASan sees any read past it */
    m->h = (mhdr_t){M_RESULTS, 0, 1, 0};
    m->r = (wres_t){.id = 7, .first = 0, .count = 1, .datalen = UINT64_MAX - 40};
    task_t *t;
    cr_assert_not(parse_one(m, sizeof *m, 1, &t), "a data length past the message is malformed");
    cr_assert_null(t->res);
    free_task(t);
    free(m);
}

Test(ipc_hostile, pool_result_items_must_add_up)
{
    results_msg_t *m = calloc(1, sizeof *m);
    m->h = (mhdr_t){M_RESULTS, 0, 1, 0};
    m->r = (wres_t){.id = 7, .first = 0, .count = 2, .datalen = sizeof m->data};
    m->tab[0] = (witem_t){0, 100000}; /* item 0 claims far more than the data */
    m->tab[1] = (witem_t){0, 0};
    task_t *t;
    cr_assert_not(parse_one(m, sizeof *m, 2, &t));
    free_task(t);
    /* a failure message without its NUL */
    m->tab[0] = (witem_t){CONC_EINVAL, 8};
    m->tab[1] = (witem_t){0, 8};
    memset(m->data, 'x', sizeof m->data);
    cr_assert_not(parse_one(m, sizeof *m, 2, &t));
    free_task(t);
    /* well formed: accepted, items inside the block */
    m->data[7] = 0;
    cr_assert(parse_one(m, sizeof *m, 2, &t));
    cr_assert_not_null(t->res);
    cr_assert_eq(t->res->got, 2);
    free_task(t);
    free(m);
}

Test(ipc_hostile, pool_result_piece_sent_twice)
{
    /* two pieces for item 0 of a two-item task: item 1 would stay unset */
    struct {
        mhdr_t h;
        wres_t r1;
        witem_t t1;
        unsigned char d1[8];
        wres_t r2;
        witem_t t2;
        unsigned char d2[8];
    } *m = calloc(1, sizeof *m);
    m->h = (mhdr_t){M_RESULTS, 0, 2, 0};
    m->r1 = (wres_t){.id = 7, .first = 0, .count = 1, .datalen = 8};
    m->t1 = (witem_t){0, 8};
    m->r2 = m->r1;
    m->t2 = m->t1;
    task_t *t;
    cr_assert_not(parse_one((results_msg_t *)(void *)m, sizeof *m, 2, &t));
    cr_assert(t->res == NULL || t->res->got < 2, "never complete with an unset item");
    free_task(t);
    free(m);
}

/* A peer hands over a segment of its own making (SCM_RIGHTS, or the name
 * of its fd): a perfect queue header, but no seals, so it could shrink
 * the file under the victim's mapping, and the victim's next access
 * would be SIGBUS. attach refuses a segment not sealed against
 * shrinking. */
Test(ipc_hostile, queue_attach_refuses_an_unsealed_segment, .timeout = 30)
{
    conc_mpqueue_t *q;
    cr_assert_eq(conc_mpqueue_new(&q, CONC_MPQ_QUEUE, 0, CAP), 0);
    peer_t pe = peer_map(q);
    int fd = memfd_create("forged-queue", MFD_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, pe.s, pe.size), (ssize_t)pe.size);
    conc_mpqueue_t *v = NULL;
    int rc = conc_mpqueue_attach(&v, fd);
    if (rc == 0) {
        /* what the peer would do next: then any put faults */
        cr_assert_eq(ftruncate(fd, 4096), 0);
        conc_mpqueue_free(v);
    }
    cr_assert_eq(rc, CONC_EINVAL, "attached an unsealed segment (a peer can shrink it: SIGBUS)");
    close(fd);
    peer_unmap(&pe);
    conc_mpqueue_free(q);
}

/* conc_shared_alloc memory is shared with every fork child. Its size, which
 * conc_shared_free passes to munmap, must not be: a child that rewrites it
 * would make the parent's free unmap whatever follows the block (here a
 * page of the parent's own, placed right after it). */
Test(ipc_hostile, shared_free_size_not_forgeable_by_a_fork_child, .timeout = 30)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    /* mappings are usually placed top down: our page first, the block
     * right below it (not under ASan: then only the size is compared) */
    unsigned char *after = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(after, MAP_FAILED);
    unsigned char *p;
    cr_assert_eq(conc_shared_alloc(pg, (void **)&p), 0);
    bool adjacent = p + pg == after;
    after[0] = 42;
    /* the header sits at the end of the page before the block */
    uint64_t size = ((volatile uint64_t *)(void *)(p - 16))[1];
    fflush(NULL);
    pid_t c = fork();
    cr_assert_neq(c, -1);
    if (c == 0) { /* the hostile child */
        if (mprotect(p - pg, pg, PROT_READ | PROT_WRITE) == 0)
            ((volatile uint64_t *)(void *)(p - 16))[1] = size + pg; /* one page more */
        _exit(0);
    }
    int st;
    cr_assert_eq(waitpid(c, &st, 0), c);
    uint64_t now = ((volatile uint64_t *)(void *)(p - 16))[1];
    if (now != size) /* do not let the free below unmap what is not ours */
        ((volatile uint64_t *)(void *)(p - 16))[1] = size;
    cr_assert_eq(now, size, "a fork child changed the size conc_shared_free unmaps");
    conc_shared_free(p);
    unsigned char v;
    cr_assert(!adjacent || mincore(after, pg, &v) == 0, "conc_shared_free unmapped a page that was not the block's");
    cr_assert_eq(after[0], 42);
    munmap(after, pg);
}
