/*
 * dump.c — conc_dump: every OS thread, green thread and child process
 * conc knows, with its state (running / ready / blocked), what it is
 * blocked on and for how long, and a backtrace (conc/trace.h).
 *
 * What a context waits on is the copy conc__park keeps in the context
 * (core/park.h: wait_obj/kind/since/deadline, blocked), so a dump reads
 * contexts only, never a waiter on another stack. The registry lock
 * (core/registry.c) keeps OS contexts alive while the dump reads them; a
 * hub's list guard keeps its green threads (and their stacks) alive.
 *
 * Backtraces. OS threads: the dumper publishes one slot per thread (its
 * tid) and sends each thread CONC_DUMP_BT_SIGNAL; the handler finds its
 * slot by tid, claims it with a CAS, fills it with backtrace(3) (loaded
 * before the first signal, so the handler neither allocates nor loads
 * anything) and marks it done. The dumper waits for all of them at once,
 * at most 200 ms, and abandons the slots that did not answer (a thread
 * that blocks the signal); a late handler finds its slot abandoned or
 * reused and writes nothing that is still read. Slots are static and
 * never freed, tagged with a generation. Green threads that are not
 * running: a frame-pointer walk from the saved context (src/arch: the
 * saved stack pointer holds the resume address and the frame pointer),
 * bounded by the stack's range, so a stale or broken chain just ends.
 * Under TSan the signal step is skipped (its runtime delays signals to
 * safe points and reports the handler's writes) and said so in the dump.
 *
 * Dump on a signal (CONC_DUMP_SIGNAL=QUIT or conc_dump_on_signal): the
 * handler only posts a semaphore (async-signal-safe); a dedicated thread,
 * started with the first request, waits on it and dumps to stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "conc/process.h"
#include "conc/trace.h"
#include "core/sanitize.h"
#include "green/internal.h"
#include "observe/internal.h"
#include "thread/internal.h"

void conc__pools_dump(FILE *f); /* futures/pool.c */
size_t conc__engines_dump(FILE *f); /* pool/engine.c: process pools and their workers */

#define BT_FRAMES 32
#define MAX_SLOTS 1024

#ifndef CONC_DUMP_BT_SIGNAL
#define CONC_DUMP_BT_SIGNAL (SIGRTMIN + 6)
#endif

typedef struct {
    long tid;
    unsigned state; /* gen * 4 + phase: 0 open, 1 writing, 2 done, 3 abandoned (atomic) */
    int n;
    void *frames[BT_FRAMES];
} bt_slot_t;

static bt_slot_t slots[MAX_SLOTS];
static int nslots; /* atomic */
static unsigned gen;
static pthread_mutex_t dump_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t bt_once = PTHREAD_ONCE_INIT;
static bool bt_ok;

#ifndef CONC__TSAN
static void bt_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig, (void)si, (void)uc;
    int saved = errno;
    long me = (long)syscall(SYS_gettid);
    int n = __atomic_load_n(&nslots, __ATOMIC_ACQUIRE);
    for (int i = 0; i < n && i < MAX_SLOTS; i++) {
        if (__atomic_load_n(&slots[i].tid, __ATOMIC_RELAXED) != me)
            continue;
        unsigned s = __atomic_load_n(&slots[i].state, __ATOMIC_ACQUIRE);
        if ((s & 3) == 0 && __atomic_compare_exchange_n(&slots[i].state, &s, s + 1, false, __ATOMIC_ACQ_REL,
                                                        __ATOMIC_RELAXED)) {
            slots[i].n = backtrace(slots[i].frames, BT_FRAMES);
            __atomic_store_n(&slots[i].state, s + 2, __ATOMIC_RELEASE);
        }
        break;
    }
    errno = saved;
}
#endif

static void bt_init(void)
{
#ifdef CONC__TSAN
    bt_ok = false;
#else
    void *warm[4];
    backtrace(warm, 4); /* loads the unwinder now, not in a handler */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = bt_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    bt_ok = sigaction(CONC_DUMP_BT_SIGNAL, &sa, NULL) == 0;
#endif
}

/* ------------------------------------------------------------ the walk */

typedef struct {
    char name[48];
    const char *state;
    char what[200];
    char holder[48];
    double for_s;
    double until_s; /* sleep: seconds left; NAN otherwise */
    int nframes;
    void *frames[BT_FRAMES];
} line_t;

static double now_s(void) { return (double)conc__now_coarse() / 1e9; }

static void describe(conc__ctx_t *c, line_t *ln, const char *running_state)
{
    if (!__atomic_load_n(&c->blocked, __ATOMIC_ACQUIRE)) {
        ln->state = running_state;
        ln->what[0] = 0;
        ln->holder[0] = 0;
        return;
    }
    const void *obj = __atomic_load_n(&c->wait_obj, __ATOMIC_RELAXED);
    int kind = __atomic_load_n(&c->wait_kind, __ATOMIC_RELAXED);
    int64_t since = __atomic_load_n(&c->wait_since, __ATOMIC_RELAXED);
    int64_t dl = __atomic_load_n(&c->wait_deadline, __ATOMIC_RELAXED);
    ln->state = "blocked";
    conc__describe_obj(ln->what, sizeof ln->what, obj, kind);
    ln->for_s = since ? conc__obs_tick_age(since) : -1; /* -1: blocked before any observation */
    if (since && ln->for_s < 0)
        ln->for_s = 0;
    ln->until_s = -1;
    if (kind == CONC__WAIT_SLEEP && dl != CONC__NO_DEADLINE)
        ln->until_s = (double)(dl - conc__now_ns()) / 1e9;
    ln->holder[0] = 0;
    conc__ctx_snap_t h;
    if ((kind == CONC__WAIT_LOCK || kind == CONC__WAIT_RLOCK || CONC__WAIT_IS_SHARED(kind)) && conc__wait_holder(obj, kind, &h))
        snprintf(ln->holder, sizeof ln->holder, "%s", h.name);
    else if (kind == CONC__WAIT_LOCK && (__atomic_load_n(&((const conc_lock_t *)obj)->state, __ATOMIC_RELAXED) & 1u))
        snprintf(ln->holder, sizeof ln->holder, "?");
}

/* A frame-pointer walk of a suspended green thread's stack. */
#if defined(__SANITIZE_ADDRESS__) || defined(CONC__ASAN)
__attribute__((no_sanitize_address))
#endif
#if defined(CONC__TSAN)
__attribute__((no_sanitize_thread))
#endif
static int green_frames(conc_green_t *g, void **out, int max)
{
    uintptr_t lo = (uintptr_t)g->stack.lo, hi = (uintptr_t)g;
    uintptr_t *sp = g->gs.sp;
    if ((uintptr_t)sp < lo || (uintptr_t)sp + 24 > hi)
        return 0;
#if defined(__x86_64__)
    uintptr_t pc = sp[1], fp = sp[2];
#elif defined(__aarch64__)
    uintptr_t fp = sp[0], pc = sp[1];
#else
    return 0;
#endif
    int n = 0;
    out[n++] = (void *)pc;
    while (n < max && fp >= lo && fp + 16 <= hi && (fp & 7) == 0) {
        uintptr_t next = ((uintptr_t *)fp)[0], ret = ((uintptr_t *)fp)[1];
        if (!ret)
            break;
        out[n++] = (void *)ret;
        if (next <= fp)
            break;
        fp = next;
    }
    return n;
}

static void print_line(FILE *f, const char *indent, const char *label, const line_t *ln)
{
    fprintf(f, "%s%s \"%s\": %s", indent, label, ln->name, ln->state);
    if (ln->what[0]) {
        if (ln->until_s >= 0)
            fprintf(f, " on sleep until %+.1f s", ln->until_s);
        else
            fprintf(f, " on %s", ln->what);
        if (ln->holder[0])
            fprintf(f, " held by %s", ln->holder);
        if (ln->for_s >= 0)
            fprintf(f, " for %.1f s", ln->for_s);
    }
    fputc('\n', f);
}

typedef struct {
    line_t *lines;
    size_t n, cap;
} lines_t;

static line_t *lines_add(lines_t *ls)
{
    if (ls->n == ls->cap) {
        size_t cap = ls->cap ? ls->cap * 2 : 64;
        line_t *p = realloc(ls->lines, cap * sizeof *p);
        if (!p)
            return NULL;
        ls->lines = p;
        ls->cap = cap;
    }
    line_t *ln = &ls->lines[ls->n++];
    memset(ln, 0, sizeof *ln);
    ln->until_s = -1;
    return ln;
}

/* From now on parks note since when they wait (core/park.h): the dumps
 * say "for 2.1 s" of every wait that began after this. */
static void mark_dumps_wanted(void)
{
#ifndef CONC_NO_OBSERVE
    if (!conc__obs_on(CONC__OBS_DUMP))
        __atomic_fetch_or(&conc__obs_flags, (uint32_t)CONC__OBS_DUMP, __ATOMIC_RELAXED);
#endif
}

int conc_dump(FILE *f)
{
    if (!f)
        return CONC_EINVAL;
    mark_dumps_wanted();
    pthread_once(&bt_once, bt_init);
    pthread_mutex_lock(&dump_mu);
    long me = (long)syscall(SYS_gettid);
    fprintf(f, "conc dump: process %d, at %.3f s (monotonic)\n", (int)getpid(), now_s());

    conc__reg_lock();
    /* 1. OS threads: ask each for its backtrace, all at once */
    gen++;
    int ns = 0;
    for (conc__ctx_t *c = conc__reg_os_first(); c && ns < MAX_SLOTS; c = c->reg_next, ns++) {
        slots[ns].tid = c->tid;
        slots[ns].n = 0;
        __atomic_store_n(&slots[ns].state, gen * 4u, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&nslots, ns, __ATOMIC_RELEASE);
    if (bt_ok) {
        int i = 0;
        for (conc__ctx_t *c = conc__reg_os_first(); c && i < ns; c = c->reg_next, i++) {
            if (c->tid == me)
                slots[i].n = backtrace(slots[i].frames, BT_FRAMES);
            else if (pthread_kill((pthread_t)c->pt, CONC_DUMP_BT_SIGNAL) != 0)
                __atomic_store_n(&slots[i].state, gen * 4u + 3u, __ATOMIC_RELEASE);
        }
        int64_t until = conc__now_ns() + 200000000;
        for (;;) {
            int pending = 0;
            for (int k = 0; k < ns; k++) {
                unsigned s = __atomic_load_n(&slots[k].state, __ATOMIC_ACQUIRE);
                if (slots[k].tid != me && (s & 3) < 2)
                    pending++;
            }
            if (!pending || conc__now_ns() >= until)
                break;
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
        for (int k = 0; k < ns; k++) {
            if (slots[k].tid == me)
                continue;
            unsigned s = gen * 4u;
            if (!__atomic_compare_exchange_n(&slots[k].state, &s, s + 3, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                while ((__atomic_load_n(&slots[k].state, __ATOMIC_ACQUIRE) & 3) == 1)
                    sched_yield(); /* its handler is writing: nearly done */
        }
    }

    /* 2. each OS thread, then the green threads of its hub */
    lines_t greens = {0};
    conc__symcache_t *sc = conc__symcache_new();
    int i = 0;
    size_t nthreads = 0, ngreen = 0;
    for (conc__ctx_t *c = conc__reg_os_first(); c; c = c->reg_next, i++) {
        line_t ln;
        memset(&ln, 0, sizeof ln);
        ln.until_s = -1;
        conc__ctx_name(c, ln.name, sizeof ln.name);
        describe(c, &ln, "running");
        nthreads++;
        fprintf(f, "Thread \"%s\" (ident 0x%lx, tid %ld): %s", ln.name, c->pt, c->tid, ln.state);
        if (ln.what[0]) {
            if (ln.until_s >= 0)
                fprintf(f, " on sleep until %+.1f s", ln.until_s);
            else
                fprintf(f, " on %s", ln.what);
            if (ln.holder[0])
                fprintf(f, " held by %s", ln.holder);
            if (ln.for_s >= 0)
                fprintf(f, " for %.1f s", ln.for_s);
        }
        fputc('\n', f);
        if (i < ns && slots[i].tid == me)
            conc__print_frames_c(f, "    ", slots[i].frames, slots[i].n, sc);
        else if (i < ns && (__atomic_load_n(&slots[i].state, __ATOMIC_ACQUIRE) & 3) == 2 && slots[i].n > 2)
            conc__print_frames_c(f, "    ", slots[i].frames + 2, slots[i].n - 2, sc); /* not the handler's frames */
        else if (!bt_ok)
            fprintf(f, "    (no backtrace: %s)\n",
#ifdef CONC__TSAN
                    "skipped under ThreadSanitizer"
#else
                    "the signal could not be installed"
#endif
            );
        else
            fprintf(f, "    (no backtrace: the thread did not answer the signal)\n");

        conc__gs_t *gs = __atomic_load_n(&c->green, __ATOMIC_ACQUIRE); /* released by green/hub.c */
        if (!gs || c->is_green)
            continue;
        conc__hub_t *h = gs->hub;
        greens.n = 0;
        conc__hub_all_lock(h);
        conc__hub_all_held = h; /* describe's holder lookup walks this hub too */
        for (conc_green_t *g = h->all; g; g = g->all_next) {
            line_t *gl = lines_add(&greens);
            if (!gl)
                break;
            snprintf(gl->name, sizeof gl->name, "%s", g->name_state == 2 ? g->name : conc_green_name(g));
            bool running = conc__racy_ptr((void *const *)&h->cur) == &g->gs;
            bool started = atomic_load_explicit(&g->ran, memory_order_relaxed);
            describe(&g->ctx, gl, running ? "running" : started ? "ready" : "ready (not started)");
            if (!running && started)
                gl->nframes = green_frames(g, gl->frames, BT_FRAMES);
        }
        conc__hub_all_held = NULL;
        conc__hub_all_unlock(h);
        for (size_t k = 0; k < greens.n; k++) {
            print_line(f, "  ", "green", &greens.lines[k]);
            conc__print_frames_c(f, "      ", greens.lines[k].frames, greens.lines[k].nframes, sc);
        }
        ngreen += greens.n;
    }
    free(greens.lines);
    conc__symcache_free(sc);
    conc__reg_unlock();

    /* 3. executors and their queues */
    conc__pools_dump(f);
    size_t nworkers = conc__engines_dump(f);

    /* 4. child processes */
    conc_process_t *kids[64];
    size_t nk = conc_active_children(kids, 64);
    for (size_t k = 0; k < nk && k < 64; k++) {
        const char *nm = conc_process_name(kids[k]);
        fprintf(f, "Process \"%s\" pid %d: running\n", nm ? nm : "?", conc_process_pid(kids[k]));
        conc_process_free(kids[k]);
    }
    fprintf(f, "conc dump end: %zu threads, %zu green threads, %zu child processes\n", nthreads, ngreen,
            nk + nworkers);
    fflush(f);
    pthread_mutex_unlock(&dump_mu);
    return 0;
}

/* ------------------------------------------------------------ on a signal */

static sem_t sig_sem;
static pthread_once_t sig_once = PTHREAD_ONCE_INIT;
static bool sig_thread_ok;
static int sig_armed; /* a signal dumps in this process (atomic) */

static void *sig_thread(void *arg)
{
    (void)arg;
    for (;;) {
        if (sem_wait(&sig_sem) != 0)
            continue;
        conc_dump(stderr);
    }
    return NULL;
}

static void sig_start(void)
{
    sem_init(&sig_sem, 0, 0);
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the dumper takes no signals */
    sig_thread_ok = pthread_create(&t, &a, sig_thread, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&a);
}

static void sig_handler(int sig)
{
    (void)sig;
    int saved = errno;
    sem_post(&sig_sem);
    errno = saved;
}

int conc_dump_on_signal(int signo)
{
    if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP || signo == CONC_DUMP_BT_SIGNAL)
        return CONC_EINVAL;
    pthread_once(&sig_once, sig_start);
    if (!sig_thread_ok)
        return CONC_ESYS;
    pthread_once(&bt_once, bt_init);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sig_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) != 0)
        return CONC_ESYS;
    __atomic_store_n(&sig_armed, 1, __ATOMIC_RELAXED);
    mark_dumps_wanted();
    return 0;
}

/* Fork: the child has no dumping thread (the handler would post to a
 * semaphore nobody waits on: the signal swallowed) and may have forked
 * while another thread held dump_mu. The child gets the mutex fresh and,
 * if a signal was armed, a dumping thread of its own. */
static void dump_atfork_child(void)
{
    pthread_mutex_init(&dump_mu, NULL);
#ifndef CONC__TSAN /* TSan kills a forked child that starts a thread */
    if (__atomic_load_n(&sig_armed, __ATOMIC_RELAXED)) {
        sem_destroy(&sig_sem);
        sig_start();
    }
#endif
}

/* CONC_DUMP_SIGNAL=QUIT (or SIGQUIT, or a number). Called by the
 * registry's constructor (core/registry.c), so that a program linked with
 * libconc.a, which may not pull this file in otherwise, still has it. */
void conc__dump_env(void)
{
    pthread_atfork(NULL, NULL, dump_atfork_child);
    const char *v = getenv("CONC_DUMP_SIGNAL");
    if (!v || !*v)
        return;
    if (strncmp(v, "SIG", 3) == 0)
        v += 3;
    static const struct {
        const char *name;
        int sig;
    } names[] = {{"QUIT", SIGQUIT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"HUP", SIGHUP},
                 {"INT", SIGINT},   {"TERM", SIGTERM}, {"PWR", SIGPWR},   {"WINCH", SIGWINCH}};
    char *end;
    long n = strtol(v, &end, 10);
    int sig = (end != v && !*end && n > 0 && n < NSIG) ? (int)n : 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(v, names[i].name) == 0)
            sig = names[i].sig;
    if (sig <= 0 || conc_dump_on_signal(sig) != 0)
        fprintf(stderr, "conc: CONC_DUMP_SIGNAL=%s: not a signal a dump can be asked with; no dump on a signal\n",
                getenv("CONC_DUMP_SIGNAL"));
}
