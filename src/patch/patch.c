/*
 * patch.c — libconc_patch.so, gevent.monkey for C: the core every
 * intercepted call shares (docs/patch.md, conc/patch.h).
 *
 * How it works. The library defines read, write, recv, poll, sleep,
 * getaddrinfo... itself; preloaded (LD_PRELOAD) or linked before libc, the
 * dynamic linker binds every other object's calls to these definitions.
 * Each one asks libconc what the caller is (conc_context_kind, one TLS
 * load):
 *   - not a green thread (an OS thread, the hub's own loop, the main
 *     context of a hub thread): the call goes straight to libc's function
 *     (dlsym(RTLD_NEXT), cached) — unchanged behaviour, unchanged cost
 *     but for that check;
 *   - a green thread: the call is made so that it never blocks the OS
 *     thread (MSG_DONTWAIT on sockets, a readiness wait first on pipes and
 *     terminals), and where libc's call would block, the green thread
 *     parks on its hub (conc_wait_read / conc_wait_write) until the fd is
 *     ready, its timeout passes, or a kill / timeout scope cuts it short.
 * What the caller asked for is honoured: a non-blocking fd (O_NONBLOCK,
 * MSG_DONTWAIT) still gets EAGAIN at once, a zero poll timeout still only
 * looks, SO_RCVTIMEO / SO_SNDTIMEO still end a blocked socket call with
 * EAGAIN, and the caller's fd flags are never left changed.
 *
 * One libconc. The patch links libconc.so, and must see the same copy as
 * the program: its green threads live in that copy's thread-locals. A
 * program that linked libconc statically has a second copy, whose green
 * threads look to libconc.so like its OS thread; we notice (below: the
 * stack pointer is outside the OS thread's stack, and not on a signal
 * stack), say so once on stderr, and leave the calls alone.
 *
 * libconc's own calls come through here too (its read, poll, recv... are
 * bound to our definitions like anyone's). They are left alone: a call
 * whose return address lies in libconc.so's code goes to libc (libconc
 * knows what each of its calls blocks, e.g. a 10 s poll for a forkserver's
 * reply; a kill must not be swallowed by its EINTR loop). That is also
 * why no re-entrancy flag is needed when the patch calls into libconc —
 * and a per-OS-thread flag would be wrong anyway, since a green thread
 * parked inside a patched call lets others make patched calls. (Under
 * ASan its interceptor sits between libconc and us and hides the caller;
 * libconc's calls then take the patched path, which gives the same
 * results for its non-blocking calls.)
 */
#include "patch/internal.h"

#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conc/io.h"

static _Atomic int patch_on = 1;
static _Atomic int cut_errno = EINTR;

void *conc__patch_resolve(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        /* Nothing sensible to fall back to: say what is missing and stop. */
        static const char pre[] = "conc_patch: cannot find libc's ";
        ssize_t r = write(2, pre, sizeof pre - 1);
        r = write(2, name, strlen(name));
        r = write(2, "\n", 1);
        (void)r;
        abort();
    }
    return f;
}

static int parse_errno(const char *s)
{
    static const struct {
        const char *name;
        int e;
    } names[] = {{"EINTR", EINTR}, {"ECANCELED", ECANCELED}, {"ETIMEDOUT", ETIMEDOUT}, {"EIO", EIO},
                 {"ECONNABORTED", ECONNABORTED}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0)
            return names[i].e;
    char *end;
    long v = strtol(s, &end, 10);
    return (*s && !*end && v > 0 && v < 4096) ? (int)v : 0;
}

__attribute__((constructor)) static void patch_init(void)
{
    const char *on = getenv("CONC_PATCH");
    if (on && strcmp(on, "0") == 0)
        atomic_store(&patch_on, 0);
    const char *ce = getenv("CONC_PATCH_CUT_ERRNO");
    if (ce && *ce) {
        int e = parse_errno(ce);
        if (e)
            atomic_store(&cut_errno, e);
        else
            fprintf(stderr, "conc_patch: CONC_PATCH_CUT_ERRNO=%s is not an errno; EINTR is used\n", ce);
    }
}

PATCH_EXPORT int conc_patch_set_cut_errno(int e)
{
    if (e <= 0)
        return CONC_EINVAL;
    return atomic_exchange(&cut_errno, e);
}

PATCH_EXPORT bool conc_patch_active(void) { return atomic_load_explicit(&patch_on, memory_order_relaxed); }

int conc__patch_cut_errno(void) { return atomic_load_explicit(&cut_errno, memory_order_relaxed); }

/* ------------------------------------------------ a second libconc? */

static __thread uintptr_t stk_lo __attribute__((tls_model("initial-exec")));
static __thread uintptr_t stk_hi __attribute__((tls_model("initial-exec")));
static __thread int stk_state __attribute__((tls_model("initial-exec"))); /* 0 unknown, 1 known, 2 busy/none */
static _Atomic int warned;

/* Is the caller on a stack that is neither its OS thread's nor a signal
 * stack? Then it is some coroutine libconc.so does not know. */
static bool foreign_stack(void)
{
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    if (__builtin_expect(stk_state != 1, 0)) {
        if (stk_state != 0)
            return false; /* being found (pthread_getattr_np reads files through us), or unknowable */
        stk_state = 2;
        pthread_attr_t a;
        if (pthread_getattr_np(pthread_self(), &a) == 0) {
            void *lo;
            size_t sz;
            if (pthread_attr_getstack(&a, &lo, &sz) == 0) {
                stk_lo = (uintptr_t)lo;
                stk_hi = (uintptr_t)lo + sz;
                stk_state = 1;
            }
            pthread_attr_destroy(&a);
        }
        if (stk_state != 1)
            return false;
    }
    if (sp >= stk_lo && sp < stk_hi)
        return false;
    stack_t ss;
    if (sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_ONSTACK))
        return false;
    return true;
}

static void warn_foreign(void)
{
    if (atomic_exchange(&warned, 1))
        return;
    static const char msg[] =
        "conc_patch: a blocking call was made on a stack that libconc.so does not know (a green thread of a "
        "second, statically linked libconc?). libconc_patch.so only patches green threads of the libconc.so it "
        "links: link the program with libconc.so (conc::conc), not libconc.a. Such calls are not patched.\n";
    ssize_t r = REAL(write)(2, msg, sizeof msg - 1);
    (void)r;
}

/* ---------------------------------------------- libconc's own calls */

/* libconc.so's code (its executable segment): calls made from there are
 * libconc's own, written knowing what they block (a forkserver's reply
 * under a lock, the hub's epoll_wait...), and go to libc untouched. */
static uintptr_t lib_lo, lib_hi;
static _Atomic int lib_state; /* 0 not looked up, 1 busy, 2 known */

static int find_lib(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    uintptr_t want = (uintptr_t)arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (want >= lo && want < hi) {
            lib_lo = lo;
            lib_hi = hi;
            return 1;
        }
    }
    return 0;
}

static bool from_libconc(const void *ret)
{
    int st = atomic_load_explicit(&lib_state, memory_order_acquire);
    if (__builtin_expect(st != 2, 0)) {
        int zero = 0;
        if (st == 1 || !atomic_compare_exchange_strong(&lib_state, &zero, 1))
            return false; /* being looked up (dl_iterate_phdr may call us) */
        dl_iterate_phdr(find_lib, (void *)(uintptr_t)conc_context_kind);
        atomic_store_explicit(&lib_state, 2, memory_order_release);
    }
    return (uintptr_t)ret >= lib_lo && (uintptr_t)ret < lib_hi;
}

bool conc__patch_green(const void *ret)
{
    if (__builtin_expect(!atomic_load_explicit(&patch_on, memory_order_relaxed), 0))
        return false;
    int k = conc_context_kind();
    if (k == CONC_CTX_GREEN)
        return !from_libconc(ret);
    if (k == CONC_CTX_THREAD && __builtin_expect(foreign_stack(), 0))
        warn_foreign();
    return false;
}

/* ---------------------------------------------------------- deadlines */

double conc__patch_deadline_ms(int ms)
{
    return ms < 0 ? PATCH_NEVER : conc_monotonic() + ms / 1e3;
}

double conc__patch_deadline_ts(const struct timespec *ts)
{
    return ts ? conc_monotonic() + (double)ts->tv_sec + ts->tv_nsec / 1e9 : PATCH_NEVER;
}

double conc__patch_sock_deadline(int fd, bool wr)
{
    struct timeval tv;
    socklen_t len = sizeof tv;
    if (getsockopt(fd, SOL_SOCKET, wr ? SO_SNDTIMEO : SO_RCVTIMEO, &tv, &len) != 0 ||
        (tv.tv_sec == 0 && tv.tv_usec == 0))
        return PATCH_NEVER;
    return conc_monotonic() + (double)tv.tv_sec + tv.tv_usec / 1e6;
}

/* -------------------------------------------------------------- waits */

/* conc's answer -> W_*. A CONC_ETIMEDOUT is ours when our deadline has
 * passed; before it, a timeout scope fired (a cut). */
static int outcome(int rc, double dl)
{
    switch (rc) {
    case 0:
        return W_READY;
    case CONC_ETIMEDOUT:
        return (dl != PATCH_NEVER && conc_monotonic() >= dl - 1e-6) ? W_TIMEOUT : W_CUT;
    case CONC_EKILLED:
        return W_CUT;
    case CONC_EINVAL: /* a bad fd: the next syscall says EBADF */
        return W_READY;
    default:
        return W_ERROR;
    }
}

static double left_of(double dl)
{
    if (dl == PATCH_NEVER)
        return CONC_FOREVER;
    double left = dl - conc_monotonic();
    return left > 0 ? left : 0;
}

int conc__patch_wait_fd(int fd, short events, double dl)
{
    bool rd = events & (POLLIN | POLLRDNORM | POLLRDHUP);
    bool wr = events & (POLLOUT | POLLWRNORM);
    if ((events & (POLLPRI | POLLRDBAND | POLLWRBAND)) || (rd && wr)) {
        struct pollfd p = {.fd = fd, .events = events};
        return conc__patch_wait_many(&p, 1, dl);
    }
    int rc = wr ? conc_wait_write(fd, left_of(dl)) : conc_wait_read(fd, left_of(dl));
    if (rc == CONC_EPERM) {
        /* another green thread of this hub waits on fd the same way: wait
         * through an epoll of our own instead */
        struct pollfd p = {.fd = fd, .events = events ? events : POLLIN};
        return conc__patch_wait_many(&p, 1, dl);
    }
    return outcome(rc, dl);
}

int conc__patch_wait_many(const struct pollfd *fds, nfds_t n, double dl)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return W_ERROR;
    nfds_t added = 0;
    int res = -1;
    for (nfds_t i = 0; i < n && res < 0; i++) {
        int fd = fds[i].fd;
        if (fd < 0)
            continue;
        /* poll's bits are epoll's (EPOLLIN == POLLIN ...); level-triggered.
         * The same fd twice: one entry with every event asked for. */
        uint32_t ev = 0;
        for (nfds_t j = 0; j < n; j++)
            if (fds[j].fd == fd)
                ev |= (uint16_t)fds[j].events;
        struct epoll_event e = {.events = ev, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) == 0)
            added++;
        else if (errno != EEXIST)
            res = W_READY; /* EPERM: a file, always ready; EBADF: poll reports POLLNVAL */
    }
    if (res < 0 && added == 0) {
        /* nothing to watch: poll(NULL, 0, ms) is a sleep */
        int rc = conc_sleep(dl == PATCH_NEVER ? CONC_FOREVER : left_of(dl));
        res = rc == 0 ? W_TIMEOUT : rc == CONC_ETIMEDOUT || rc == CONC_EKILLED ? W_CUT : W_ERROR;
    }
    if (res < 0)
        res = outcome(conc_wait_read(ep, left_of(dl)), dl);
    conc__patch_close(ep);
    return res;
}

/* --------------------------------------------------------------- close */

/* conc_close closes through close(2), i.e. through us: this flag (per OS
 * thread; conc_close never switches) sends that inner call to libc. */
static __thread int in_close __attribute__((tls_model("initial-exec")));

int conc__patch_close(int fd)
{
    in_close = 1;
    int rc = conc_close(fd);
    in_close = 0;
    if (rc == 0)
        return 0;
    if (rc != CONC_ESYS)
        errno = EBADF;
    return -1;
}

/* close(2): a hub that watched fd must forget it first, or a later fd
 * with the same number would look watched already and its waiters would
 * never wake (conc/io.h: "close with conc_close"). Only the caller's hub
 * can be told: close an fd on the OS thread whose green threads used it. */
PATCH_EXPORT int close(int fd)
{
    if (!in_close && atomic_load_explicit(&patch_on, memory_order_relaxed)) {
        int k = conc_context_kind();
        /* THREAD with a hub: the OS thread's own context may stay attached
         * to it, idle, after the join of its last green thread (it says
         * THREAD then) while the hub still watches their fds; detached,
         * conc_close is a plain close. */
        if (k == CONC_CTX_GREEN || k == CONC_CTX_MAIN ||
            (k == CONC_CTX_THREAD && conc_hub_backend() != CONC_HUB_DEFAULT))
            return conc__patch_close(fd);
    }
    return REAL(close)(fd);
}
