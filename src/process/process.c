/*
 * process.c — multiprocessing.Process and the module functions.
 *
 * A conc_process_t is a reference-counted record around a conc__child_t
 * (child.c). Three kinds: CHILD records (conc_process_new), the CURRENT
 * process (static, "MainProcess" or the name this child was started
 * with) and the PARENT record of a child (static; pid and a pidfd of the
 * parent, so is_alive/join/sentinel work on it).
 *
 * Children this process started and has not reaped yet sit in one list
 * (under `kids_lock`, holding a reference), as Python's _children set:
 * active_children() and the next start reap the ones that ended, join
 * removes them, and the exit hook (registered with the thread module's
 * exit sequence) terminates the daemon ones and joins them all, then stops
 * the fork server: no child outlives a normal exit unreaped.
 *
 * Fork: the atfork child handler empties the list (those are the parent's
 * children: their fds are closed, their handles answer CONC_EPERM here),
 * resets the counter used for names, and forgets the fork server. The
 * cached pidfd of this process is inherited by a child conc forks, where it
 * becomes the parent's pidfd.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "conc/thread.h"
#include "core/fdwait.h"
#include "core/park.h"
#include "core/shwait.h"
#include "core/time.h"
#include "process/internal.h"
#include "sync/internal.h"
#include "thread/internal.h"

enum { K_CHILD = 0, K_CURRENT = 1, K_PARENT = 2 };
enum { S_NEW = 0, S_STARTED = 1, S_CLOSED = 2 };

struct conc_process {
    int refs;                 /* atomic */
    int kind;
    int state;                /* S_* (atomic) */
    conc_process_fn fn;
    void *arg;
    size_t len;
    char *name;               /* malloc'd (static strings for CURRENT/PARENT until renamed) */
    char *ident;              /* "1", "1:2": the numbers in the default name */
    bool daemon;
    bool listed;              /* in the children list (under kids_lock) */
    bool name_owned;
    conc_start_method_t method;
    pid_t creator;
    conc__child_t child;
    struct conc_process *next, *prev;
    /* Process.authkey: a child's is copied from its creator's current one
     * at conc_process_new; the main process's is 32 random bytes, made at
     * first use (authkey_len 0 until then). */
    size_t authkey_len;
    unsigned char authkey[CONC__AUTHKEY_MAX];
};

static conc_lock_t kids_lock = CONC_LOCK_INIT;
static conc_process_t *kids;          /* started, unreaped children */
static unsigned long counter;         /* atomic: the N of Process-N */
static conc_process_t current_rec = {.refs = 1, .kind = K_CURRENT, .state = S_STARTED,
                                     .name = (char *)"MainProcess", .ident = (char *)""};
static conc_process_t parent_rec = {.refs = 1, .kind = K_PARENT, .state = S_STARTED};
static bool have_parent;
static int self_pidfd = -1;           /* atomic; this process's own pidfd */
static pthread_t forking;             /* the thread in conc's own fork (0: none) */
static bool unguarded;                /* spawned child that has not run the guard */
static int passed_fds[CONC__MAX_FDS];
static int n_passed_fds;

#define SPAWN_ENV "CONC_PROCESS_CHILD"

/* ------------------------------------------------------------- helpers */

static void kids_acquire(void) { conc__lock_hold(&kids_lock); }
static void kids_release(void) { conc_lock_release(&kids_lock); }

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void rec_ref(conc_process_t *p) { atomic_fetch_add_explicit(CONC__A(&p->refs), 1, RLX); }

static void rec_unref(conc_process_t *p)
{
    if (p->kind != K_CHILD)
        return;
    if (atomic_fetch_sub_explicit(CONC__A(&p->refs), 1, memory_order_acq_rel) != 1)
        return;
    conc__child_release(&p->child);
    free(p->arg);
    free(p->name);
    free(p->ident);
    free(p);
}

static void list_add_locked(conc_process_t *p)
{
    p->prev = NULL;
    p->next = kids;
    if (kids)
        kids->prev = p;
    kids = p;
    p->listed = true;
}

static bool list_remove_locked(conc_process_t *p)
{
    if (!p->listed)
        return false;
    if (p->prev)
        p->prev->next = p->next;
    else
        kids = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->next = p->prev = NULL;
    p->listed = false;
    return true;
}

/* The child has been reaped: take it off the list (dropping the list's ref). */
static void unlist(conc_process_t *p)
{
    kids_acquire();
    bool was = list_remove_locked(p);
    kids_release();
    if (was)
        rec_unref(p);
}

/* Reap the listed children that have ended (Python's _cleanup). */
static void cleanup(void)
{
    for (;;) {
        conc_process_t *dead = NULL;
        kids_acquire();
        for (conc_process_t *p = kids; p; p = p->next) {
            if (conc__child_poll(&p->child)) {
                list_remove_locked(p);
                dead = p;
                break;
            }
        }
        kids_release();
        if (!dead)
            return;
        rec_unref(dead);
    }
}

int conc__self_pidfd(void)
{
    int fd = conc__load(&self_pidfd, ACQ);
    if (fd >= 0)
        return fd;
    fd = conc__pidfd_open(getpid());
    if (fd < 0)
        return -1;
    int exp = -1;
    if (!atomic_compare_exchange_strong_explicit(CONC__A(&self_pidfd), &exp, fd, memory_order_acq_rel, ACQ)) {
        close(fd);
        fd = exp;
    }
    return fd;
}

const char *conc__self_name(void) { return current_rec.name; }

bool conc__unguarded(void) { return unguarded; }

int conc__child_fds(const int **fds)
{
    if (fds)
        *fds = passed_fds;
    return n_passed_fds;
}

/* ----------------------------------------------------------- the child */

void conc__become_child(const conc__child_info_t *info)
{
    /* A forked child keeps pointing at its copy of the parent's strings
     * (no malloc: every page written here is a copy-on-write fault). */
    bool copy = !info->forked;
    const char *pn = info->parent_name ? info->parent_name : current_rec.name;
    char *name = (char *)(info->name ? info->name : "Process");
    char *ident = (char *)(info->ident ? info->ident : "");
    char *pname = (char *)(pn ? pn : "MainProcess");
    if (copy) {
        name = dup_str(name);
        ident = dup_str(ident);
        pname = dup_str(pname);
        if (!name || !ident || !pname) {
            fprintf(stderr, "conc: out of memory starting a child\n");
            _exit(255);
        }
    }
    /* The old strings are not freed: the parent's name may be one of them
     * (a forked child of a child), and this happens once per process. */
    current_rec.name = name;
    current_rec.ident = ident;
    current_rec.name_owned = copy;
    current_rec.daemon = info->daemon;
    if (info->authkey && info->authkey_len && info->authkey_len <= CONC__AUTHKEY_MAX) {
        memmove(current_rec.authkey, info->authkey, info->authkey_len);
        current_rec.authkey_len = info->authkey_len;
    }
    current_rec.method = info->method; /* what conc_process_method() reports here */
    parent_rec.name = pname;
    parent_rec.name_owned = copy;
    if (have_parent && parent_rec.child.pidfd >= 0 && parent_rec.child.pidfd != info->parent_pidfd)
        close(parent_rec.child.pidfd);
    parent_rec.child.pid = info->parent_pid;
    parent_rec.child.pidfd = info->parent_pidfd;
    parent_rec.child.statusfd = -1;
    parent_rec.child.method = CONC_FORK;
    have_parent = true;
    n_passed_fds = 0;
    for (int i = 0; i < info->nfds && i < CONC__MAX_FDS; i++)
        passed_fds[n_passed_fds++] = info->fds[i];
    counter = 0;
    unguarded = false;
}

int conc__run_child_fn(conc_process_fn fn, const void *arg, size_t len)
{
    conc_fail_clear();
    int rc = fn(arg, len);
    const char *msg;
    int code = conc_failure(&msg);
    if (code) {
        fprintf(stderr, "Process %s: %s%s%s\n", current_rec.name, conc_errname(code), *msg ? ": " : "", msg);
        return 1;
    }
    return rc & 0xff;
}

static bool exit_hook(void);

/* Python's _bootstrap ending: children and threads joined, stdio flushed,
 * then _exit (the parent's atexit handlers are not ours to run). */
_Noreturn void conc__child_exit(int code)
{
    bool progress;
    do {
        progress = exit_hook();
        if (conc_active_count() <= 1)
            continue;
        conc_thread_t *ts[64];
        size_t n = conc_thread_enumerate(ts, 64);
        if (n > 64)
            n = 64;
        conc_thread_t *me = conc_current_thread();
        for (size_t i = 0; i < n; i++) {
            if (ts[i] != me && ts[i] != conc_main_thread() && !conc_thread_daemon(ts[i]) &&
                conc_thread_is_alive(ts[i])) {
                conc_thread_join(ts[i], CONC_FOREVER, NULL);
                progress = true;
            }
            conc_thread_free(ts[i]);
        }
    } while (progress);
    conc__flush_std();
    _exit(code);
}

void conc__flush_std(void)
{
    /* Python flushes sys.stdout and sys.stderr; only they are written by
     * both processes. __fpending avoids touching (copying) their pages
     * when there is nothing to write. */
    if (__fpending(stdout))
        fflush(stdout);
    if (__fpending(stderr))
        fflush(stderr);
}

/* -------------------------------------------------------------- Process */

int conc_process_new(conc_process_t **out, conc_process_fn fn, const void *arg, size_t len,
                     const conc_process_opts_t *opts)
{
    if (!out || !fn || (len && !arg))
        return CONC_EINVAL;
    conc_process_opts_t o = {0};
    if (opts)
        o = *opts;
    if ((int)o.method < CONC_START_DEFAULT || o.method > CONC_FORKSERVER)
        return CONC_EINVAL;
    conc_process_t *p = calloc(1, sizeof *p);
    if (!p)
        return CONC_ENOMEM;
    p->refs = 1;
    p->kind = K_CHILD;
    p->fn = fn;
    p->len = len;
    p->daemon = o.daemon;
    p->method = o.method;
    p->creator = getpid();
    size_t klen;
    const void *key = conc_process_authkey(&current_rec, &klen); /* inherited, as in Python */
    memcpy(p->authkey, key, klen);
    p->authkey_len = klen;
    p->child.pidfd = p->child.statusfd = -1;
    conc_lock_init(&p->child.mu);
    if (len && !(p->arg = malloc(len)))
        goto nomem;
    if (len)
        memcpy(p->arg, arg, len);
    char num[96];
    unsigned long n = atomic_fetch_add_explicit(CONC__A(&counter), 1, RLX) + 1;
    const char *mine = current_rec.ident ? current_rec.ident : "";
    snprintf(num, sizeof num, "%s%s%lu", mine, *mine ? ":" : "", n);
    if (!(p->ident = dup_str(num)))
        goto nomem;
    if (o.name) {
        p->name = dup_str(o.name);
    } else {
        char nm[112];
        snprintf(nm, sizeof nm, "Process-%s", num);
        p->name = dup_str(nm);
    }
    if (!p->name)
        goto nomem;
    *out = p;
    return 0;
nomem:
    free(p->arg);
    free(p->ident);
    free(p);
    return CONC_ENOMEM;
}

static bool registered_hook;

void conc__process_exit_hook_once(void)
{
    if (conc__load(&registered_hook, ACQ))
        return;
    bool no = false;
    if (atomic_compare_exchange_strong(CONC__A(&registered_hook), &no, true))
        conc__at_exit(exit_hook);
}

int conc_process_start(conc_process_t *p)
{
    if (!p)
        return CONC_EINVAL;
    if (p->kind != K_CHILD)
        return CONC_EPERM;
    int st = conc__load(&p->state, ACQ);
    if (st == S_CLOSED)
        return CONC_EINVAL;
    if (st != S_NEW || p->creator != getpid() || current_rec.daemon)
        return CONC_EPERM;
    int exp = S_NEW;
    if (!atomic_compare_exchange_strong_explicit(CONC__A(&p->state), &exp, S_STARTED, memory_order_acq_rel, RLX))
        return exp == S_CLOSED ? CONC_EINVAL : CONC_EPERM;
    cleanup();
    conc__launch_t l = {0};
    l.method = conc__resolve_method(p->method);
    if (l.method != CONC_FORK) {
        char why[160];
        snprintf(why, sizeof why, "a process started with %s runs it in a fresh copy of the "
                 "program, which finds functions by name", conc_start_method_name(l.method));
        l.entry = conc__require_registered((void (*)(void))p->fn, why, "CONC_REGISTER");
        if (l.entry && l.entry->sig != CONC_SIG_PROCESS) {
            conc_fail(CONC_EINVAL, "'%s' is registered, but not as a process function "
                      "(int fn(const void *arg, size_t len))", l.entry->name);
            l.entry = NULL;
        }
        if (!l.entry) {
            conc__store(&p->state, S_NEW, REL);
            return CONC_EINVAL;
        }
    }
    l.fork_fn = p->fn;
    l.arg = p->arg;
    l.len = p->len;
    l.name = p->name;
    l.ident = p->ident;
    l.daemon = p->daemon;
    l.authkey = p->authkey;
    l.authkey_len = p->authkey_len;
    /* In the child, the atfork handler keeps the cached pidfd (the
     * parent's pidfd there) only for the thread that forks for us. */
    conc__store(&forking, l.method == CONC_FORK ? pthread_self() : (pthread_t)0, RLX);
    int rc = conc__child_start(&p->child, &l);
    conc__store(&forking, (pthread_t)0, RLX); /* same page as kids_lock: no extra copy fault */
    if (rc) {
        conc__store(&p->state, S_NEW, REL);
        return rc;
    }
    p->method = l.method;
    rec_ref(p);
    kids_acquire();
    list_add_locked(p);
    kids_release();
    return 0;
}

/* Common checks of the calls on a started child: 0 or the error code. */
static int check_started(const conc_process_t *p)
{
    if (!p)
        return CONC_EINVAL;
    int st = conc__load(&p->state, ACQ);
    if (st == S_CLOSED)
        return CONC_EINVAL;
    if (st == S_NEW)
        return CONC_EPERM;
    if (p->kind == K_CHILD && p->creator != getpid())
        return CONC_EPERM;
    return 0;
}

static bool parent_alive(void)
{
    if (parent_rec.child.pidfd < 0)
        return getppid() == parent_rec.child.pid;
    struct pollfd pf = {parent_rec.child.pidfd, POLLIN, 0};
    return poll(&pf, 1, 0) == 0;
}

int conc_process_join(conc_process_t *p, double timeout)
{
    int64_t deadline;
    if (!p || conc__deadline(timeout, &deadline))
        return CONC_EINVAL;
    if (p->kind == K_CURRENT)
        return CONC_EPERM; /* joining yourself */
    int rc = check_started(p);
    if (rc)
        return rc;
    if (p->kind == K_PARENT) {
        for (;;) {
            if (!parent_alive())
                return 0;
            if (parent_rec.child.pidfd < 0)
                return CONC_EPERM;
            if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline)
                return CONC_ETIMEDOUT;
            /* colorless: a green thread parks, kills and scopes cut it */
            int w = conc__fd_wait(parent_rec.child.pidfd, CONC__FD_READ, deadline);
            if (w != 0 && w != CONC_ETIMEDOUT)
                return parent_alive() ? w : 0;
            if (w == CONC_ETIMEDOUT && conc__is_cut(w))
                return parent_alive() ? w : 0;
        }
    }
    conc__wait_label(p, CONC__WAIT_PROCESS);
    rc = conc__child_wait(&p->child, deadline);
    conc__wait_label(NULL, 0);
    if (rc)
        return rc;
    unlist(p);
    return 0;
}

bool conc_process_is_alive(conc_process_t *p)
{
    if (!p)
        return false;
    if (p->kind == K_CURRENT)
        return true;
    if (check_started(p))
        return false;
    if (p->kind == K_PARENT)
        return parent_alive();
    if (!conc__child_poll(&p->child))
        return true;
    unlist(p);
    return false;
}

int conc_process_exitcode(conc_process_t *p, int *code)
{
    if (!p || !code)
        return CONC_EINVAL;
    if (p->kind != K_CHILD)
        return CONC_EAGAIN;
    int rc = check_started(p);
    if (rc == CONC_EPERM)
        return CONC_EAGAIN; /* not started: None */
    if (rc)
        return rc;
    if (!conc__child_poll(&p->child))
        return CONC_EAGAIN;
    unlist(p);
    *code = p->child.exitcode;
    return 0;
}

int conc_process_pid(const conc_process_t *p)
{
    if (!p)
        return CONC_EINVAL;
    if (p->kind == K_CURRENT)
        return (int)getpid();
    int st = conc__load(&p->state, ACQ);
    if (st == S_CLOSED)
        return CONC_EINVAL;
    if (st == S_NEW)
        return 0;
    return (int)p->child.pid;
}

int conc_process_sentinel(const conc_process_t *p)
{
    if (p && p->kind == K_CURRENT)
        return CONC_EPERM;
    int rc = check_started(p);
    if (rc)
        return rc;
    if (p->child.pidfd < 0)
        return CONC_EPERM;
    return p->child.pidfd;
}

static int send_sig(conc_process_t *p, int sig)
{
    if (p && p->kind != K_CHILD)
        return CONC_EPERM;
    int rc = check_started(p);
    if (rc)
        return rc;
    return conc__child_signal(&p->child, sig);
}

int conc_process_terminate(conc_process_t *p) { return send_sig(p, SIGTERM); }
int conc_process_kill(conc_process_t *p) { return send_sig(p, SIGKILL); }

int conc_process_close(conc_process_t *p)
{
    if (!p)
        return CONC_EINVAL;
    if (p->kind != K_CHILD)
        return CONC_EPERM;
    int st = conc__load(&p->state, ACQ);
    if (st == S_CLOSED)
        return 0;
    if (st == S_STARTED) {
        if (p->creator != getpid())
            return CONC_EPERM;
        if (!conc__child_poll(&p->child))
            return CONC_EINVAL; /* still running */
        unlist(p);
        conc__lock_hold(&p->child.mu);
        conc__child_release(&p->child);
        conc_lock_release(&p->child.mu);
    }
    conc__store(&p->state, S_CLOSED, REL);
    return 0;
}

int conc_process_free(conc_process_t *p)
{
    if (!p || p->kind != K_CHILD)
        return CONC_EINVAL;
    rec_unref(p);
    return 0;
}

const char *conc_process_name(const conc_process_t *p) { return p ? p->name : NULL; }

int conc_process_set_name(conc_process_t *p, const char *name)
{
    if (!p || !name)
        return CONC_EINVAL;
    char *n = dup_str(name);
    if (!n)
        return CONC_ENOMEM;
    char *old = p->name;
    p->name = n;
    if (p->kind == K_CHILD || p->name_owned)
        free(old);
    p->name_owned = true;
    return 0;
}

bool conc_process_daemon(const conc_process_t *p) { return p && p->daemon; }

int conc_process_set_daemon(conc_process_t *p, bool daemon)
{
    if (!p)
        return CONC_EINVAL;
    if (p->kind != K_CHILD || conc__load(&p->state, ACQ) != S_NEW)
        return CONC_EPERM;
    p->daemon = daemon;
    return 0;
}

conc_start_method_t conc_process_method(const conc_process_t *p) { return p ? p->method : CONC_START_DEFAULT; }

/* ---------------------------------------------------- module functions */

conc_process_t *conc_current_process(void) { return &current_rec; }

/* ------------------------------------------------------------ authkey */

static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void key_init(void)
{
    if (current_rec.authkey_len) /* a child told by its parent */
        return;
    size_t got = 0;
    while (got < 32) {
        ssize_t r = getrandom(current_rec.authkey + got, 32 - got, 0);
        if (r > 0)
            got += (size_t)r;
        else if (r < 0 && errno != EINTR)
            break;
    }
    if (got < 32) { /* no entropy source: still unpredictable enough to differ */
        uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&got;
        for (size_t i = got; i < 32; i++, t = t * 6364136223846793005ull + 1442695040888963407ull)
            current_rec.authkey[i] = (unsigned char)(t >> 56);
    }
    current_rec.authkey_len = 32;
}

const void *conc_process_authkey(conc_process_t *p, size_t *len)
{
    if (!p) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (p->kind != K_CHILD) /* current, or parent: the same key (Python) */
        p = &current_rec;
    if (p == &current_rec && !current_rec.authkey_len)
        pthread_once(&key_once, key_init);
    if (len)
        *len = p->authkey_len;
    return p->authkey;
}

int conc_process_set_authkey(conc_process_t *p, const void *key, size_t len)
{
    if (!p || !key || len == 0 || len > CONC__AUTHKEY_MAX || p->kind == K_PARENT)
        return CONC_EINVAL;
    if (p->kind == K_CHILD && conc__load(&p->state, ACQ) != S_NEW)
        return CONC_EPERM; /* started: its copy is in the child already */
    if (p == &current_rec)
        pthread_once(&key_once, key_init); /* a later first read must not overwrite it */
    memmove(p->authkey, key, len);
    p->authkey_len = len;
    return 0;
}

conc_process_t *conc_parent_process(void) { return have_parent ? &parent_rec : NULL; }

size_t conc_active_children(conc_process_t **out, size_t cap)
{
    if (!out)
        cap = 0;
    cleanup();
    size_t n = 0;
    kids_acquire();
    for (conc_process_t *p = kids; p; p = p->next, n++) {
        if (n < cap) {
            rec_ref(p);
            out[n] = p;
        }
    }
    kids_release();
    return n;
}

int conc_cpu_count(void)
{
    for (int ncpu = 1024; ncpu <= (1 << 20); ncpu *= 2) {
        cpu_set_t *set = CPU_ALLOC((size_t)ncpu);
        if (!set)
            break;
        size_t sz = CPU_ALLOC_SIZE((size_t)ncpu);
        if (sched_getaffinity(0, sz, set) == 0) {
            int n = CPU_COUNT_S(sz, set);
            CPU_FREE(set);
            return n > 0 ? n : 1;
        }
        CPU_FREE(set);
        if (errno != EINVAL)
            break;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ------------------------------------------------------- exit and fork */

/* Python's util._exit_function: daemon children terminated, all joined,
 * then the fork server stopped. True if it did anything. */
static bool exit_hook(void)
{
    cleanup();
    conc_process_t *batch[64];
    size_t n = 0;
    kids_acquire();
    for (conc_process_t *p = kids; p && n < 64; p = p->next) {
        rec_ref(p);
        batch[n++] = p;
    }
    kids_release();
    if (n == 0)
        return conc__forkserver_stop();
    for (size_t i = 0; i < n; i++)
        if (batch[i]->daemon)
            conc__child_signal(&batch[i]->child, SIGTERM);
    for (size_t i = 0; i < n; i++) {
        conc__child_wait(&batch[i]->child, CONC__NO_DEADLINE);
        unlist(batch[i]);
        rec_unref(batch[i]);
    }
    return true;
}

static void atfork_prepare(void)
{
    conc__forkserver_atfork_prepare();
    kids_acquire();
}

static void atfork_parent(void)
{
    kids_release();
    conc__forkserver_atfork_parent();
}

static void atfork_child(void)
{
    /* The parent's children are not ours: close their fds, drop them. */
    conc_process_t *p = kids;
    kids = NULL;
    conc_lock_init(&kids_lock);
    while (p) {
        conc_process_t *next = p->next;
        p->next = p->prev = NULL;
        p->listed = false;
        conc__child_release(&p->child);
        conc_lock_init(&p->child.mu);
        rec_unref(p);
        p = next;
    }
    /* The cached pidfd is the parent's now: conc's own fork keeps it as
     * the parent pidfd (become_child), any other fork closes it. */
    int fd = self_pidfd;
    self_pidfd = -1;
    if (fd >= 0 && !pthread_equal(forking, pthread_self()))
        close(fd);
    counter = 0;
    conc__forkserver_atfork_child();
}

/* A spawned child whose main did not run the guard got to exit without
 * running its target: say so and fail, instead of exiting 0 as if it had
 * done its work. */
static void unguarded_exit(void)
{
    if (!unguarded)
        return;
    fprintf(stderr, "conc: this process was started by spawn or as the fork server, but main() "
                    "does not call CONC_PROCESS_MAIN(argc, argv) first: the target never ran\n");
    conc__flush_std();
    _exit(255);
}

/* ps shows comm: after exec of /proc/self/exe it reads "exe"; give the
 * child the program's own name, as its parent has. */
static void name_like_the_program(void)
{
    char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0)
        return;
    path[n] = 0;
    char *del = strstr(path, " (deleted)");
    if (del && del[10] == 0)
        *del = 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char comm[16] = {0};
    size_t len = strlen(base);
    memcpy(comm, base, len < 15 ? len : 15); /* the kernel keeps 15 bytes */
    prctl(PR_SET_NAME, comm, 0, 0, 0);
}

__attribute__((constructor)) static void conc__process_init(void)
{
    if (getenv(SPAWN_ENV)) {
        unguarded = true;
        name_like_the_program();
        atexit(unguarded_exit);
    }
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}
