/*
 * common.c — what every process-shared object in src/ipc needs: the
 * caller's pid/tid (cached, refreshed after fork), whether another process
 * still lives (for taking over a dead holder's lock and for sweeping
 * leaked segments), and anonymous shared memory for the *_new helpers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/park.h"
#include "ipc/internal.h"

/* Bumped in every fork child, so cached ids are recomputed. */
static _Atomic unsigned conc__ipc_gen = 1;
static pthread_once_t conc__ipc_once = PTHREAD_ONCE_INIT;
static _Atomic pid_t conc__ipc_pid_cache;
static __thread unsigned conc__ipc_tid_gen;
static __thread pid_t conc__ipc_tid_cache;

static void conc__ipc_atfork_child(void)
{
    atomic_store(&conc__ipc_pid_cache, 0);
    atomic_fetch_add(&conc__ipc_gen, 1);
}

static void conc__ipc_register(void) { pthread_atfork(NULL, NULL, conc__ipc_atfork_child); }

pid_t conc__ipc_pid(void)
{
    pid_t p = atomic_load_explicit(&conc__ipc_pid_cache, memory_order_relaxed);
    if (__builtin_expect(p != 0, 1))
        return p;
    pthread_once(&conc__ipc_once, conc__ipc_register);
    p = getpid();
    atomic_store_explicit(&conc__ipc_pid_cache, p, memory_order_relaxed);
    return p;
}

pid_t conc__ipc_tid(void)
{
    unsigned g = atomic_load_explicit(&conc__ipc_gen, memory_order_relaxed);
    if (__builtin_expect(conc__ipc_tid_gen == g, 1))
        return conc__ipc_tid_cache;
    pthread_once(&conc__ipc_once, conc__ipc_register);
    g = atomic_load_explicit(&conc__ipc_gen, memory_order_relaxed);
    conc__ipc_tid_cache = (pid_t)syscall(SYS_gettid);
    conc__ipc_tid_gen = g;
    return conc__ipc_tid_cache;
}

/* Reads /proc/<pid>/stat: its state letter, thread count (field 20) and
 * start time (field 22). Returns false when the file cannot be read. */
static bool conc__ipc_stat(pid_t pid, char *state, long *threads, uint64_t *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n;
    do
        n = read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and ')' */
    if (!p || p[1] != ' ')
        return false;
    *state = p[2];
    /* p+2 is field 3 (state); the thread count is field 20, the start
     * time field 22. */
    char *q = p + 2;
    *threads = 0;
    for (int f = 3; f < 22 && q; f++) {
        q = strchr(q, ' ');
        if (q)
            q++;
        if (q && f + 1 == 20)
            *threads = strtol(q, NULL, 10);
    }
    *start = q ? strtoull(q, NULL, 10) : 0;
    return true;
}

uint64_t conc__ipc_start_time(pid_t pid)
{
    char st;
    long nt;
    uint64_t t;
    return conc__ipc_stat(pid, &st, &nt, &t) ? t : 0;
}

/* thread: is the thread with that id alive, else the process. */
static bool conc__ipc_alive_as(pid_t pid, uint64_t start_time, bool thread)
{
    if (pid <= 0)
        return false;
    char st;
    long nt;
    uint64_t t;
    if (!conc__ipc_stat(pid, &st, &nt, &t)) {
        /* Gone, or /proc hides it (hidepid): ask kill(0). */
        return kill(pid, 0) == 0 || errno == EPERM;
    }
    if (st == 'X' || st == 'x')
        return false;
    /* A zombie main thread whose process still has other threads (it
     * returned through pthread_exit) shows 'Z' too: the process lives. */
    if (st == 'Z' && (thread || nt <= 1))
        return false;
    return start_time == 0 || t == start_time;
}

bool conc__ipc_alive(pid_t pid, uint64_t start_time) { return conc__ipc_alive_as(pid, start_time, false); }

/* --------------------------------------------------- holder identity
 * A pid (thread id) is reused by the kernel; a lock word that holds only
 * the id can be fooled by an unrelated process that got it. The tag says
 * which incarnation: pidfs (Linux 6.9+) gives every process and thread an
 * inode number that is never reused before reboot; older kernels fall
 * back to the start time in clock ticks (a reuse within the same tick
 * would fool it). Every process of one machine uses the same source. */
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif
#define CONC__PID_FS_MAGIC 0x50494446

static _Atomic int conc__ipc_pidfs; /* 0 unknown, 1 pidfs, -1 /proc start times */

static int conc__ipc_pidfd(pid_t id, bool thread)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, id, thread ? PIDFD_THREAD : 0);
#else
    (void)id, (void)thread;
    errno = ENOSYS;
    return -1;
#endif
}

static bool conc__ipc_use_pidfs(void)
{
    int m = atomic_load_explicit(&conc__ipc_pidfs, memory_order_relaxed);
    if (__builtin_expect(m != 0, 1))
        return m > 0;
    struct statfs sf;
    int fd = conc__ipc_pidfd(getpid(), false);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == EINTR))
        return false; /* cannot tell now: ask again next time, do not decide for good */
    m = fd >= 0 && fstatfs(fd, &sf) == 0 && (unsigned long)sf.f_type == CONC__PID_FS_MAGIC ? 1 : -1;
    if (fd >= 0)
        close(fd);
    atomic_store_explicit(&conc__ipc_pidfs, m, memory_order_relaxed);
    return m > 0;
}

/* A tag's two low bits name its source, so a tag made from a start time
 * (an old kernel, pidfd_open filtered, or out of descriptors when this
 * process first looked) is never compared with a pidfs inode, nor the
 * other way round: that would judge a live holder dead. */
#define TAG_SRC_MASK 3u
#define TAG_SRC_START 1u
#define TAG_SRC_PIDFS 2u

static uint32_t conc__ipc_fold(uint64_t x, uint32_t src)
{
    /* keep the low bits: pidfs inodes are handed out in sequence */
    return (uint32_t)(x ^ (x >> 32)) << 2 | src;
}

static uint32_t conc__ipc_start_tag(pid_t id)
{
    uint64_t start = conc__ipc_start_time(id);
    return start ? conc__ipc_fold(start, TAG_SRC_START) : 0;
}

/* The tag behind an open pidfd. */
static uint32_t conc__ipc_fd_tag(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? conc__ipc_fold((uint64_t)st.st_ino, TAG_SRC_PIDFS) : 0;
}

uint32_t conc__ipc_tag(pid_t id, bool thread)
{
    if (id <= 0)
        return 0;
    if (conc__ipc_use_pidfs()) {
        int fd = conc__ipc_pidfd(id, thread);
        if (fd < 0)
            return 0;
        uint32_t t = conc__ipc_fd_tag(fd);
        close(fd);
        return t;
    }
    return conc__ipc_start_tag(id);
}

static _Atomic pid_t conc__ipc_tag_pid;
static _Atomic uint32_t conc__ipc_ptag;
static __thread unsigned conc__ipc_ttag_gen;
static __thread uint32_t conc__ipc_ttag;

uint32_t conc__ipc_my_tag(bool thread)
{
    if (thread) {
        pid_t tid = conc__ipc_tid(); /* refreshes the generation after fork */
        unsigned g = atomic_load_explicit(&conc__ipc_gen, memory_order_relaxed);
        if (conc__ipc_ttag_gen != g) {
            conc__ipc_ttag = conc__ipc_tag(tid, true);
            conc__ipc_ttag_gen = g;
        }
        return conc__ipc_ttag;
    }
    pid_t me = conc__ipc_pid();
    if (atomic_load_explicit(&conc__ipc_tag_pid, memory_order_acquire) != me) {
        atomic_store_explicit(&conc__ipc_ptag, conc__ipc_tag(me, false), memory_order_relaxed);
        atomic_store_explicit(&conc__ipc_tag_pid, me, memory_order_release);
    }
    return atomic_load_explicit(&conc__ipc_ptag, memory_order_relaxed);
}

/* Does the current incarnation's tag (now, of the same source as tag)
 * differ from the holder's? Unknown (0) or a source this process cannot
 * compute: no difference seen. */
static bool conc__ipc_tag_differs(uint32_t tag, uint32_t now, uint32_t mask)
{
    if (!tag || !now || (tag & TAG_SRC_MASK) != (now & TAG_SRC_MASK))
        return false;
    return (now & mask) != (tag & mask);
}

bool conc__ipc_holder_alive(pid_t id, uint32_t tag, uint32_t mask, bool thread)
{
    if (id <= 0)
        return false;
    /* Only a tag with a known source is compared, and only with a tag of
     * that source (a peer may have written any bits). */
    uint32_t src = tag & TAG_SRC_MASK & mask;
    if (src != TAG_SRC_PIDFS && src != TAG_SRC_START)
        tag = 0;
    if (conc__ipc_use_pidfs()) {
        int fd = conc__ipc_pidfd(id, thread);
        if (fd < 0) {
            /* ESRCH: gone; ENOENT (EINVAL before Linux 6.1x, for a
             * process pidfd: the only EINVAL for a positive id without
             * flags): the id names no process now, a thread of another
             * at most, so the holder process is gone */
            if (errno == ESRCH || errno == ENOENT || (errno == EINVAL && !thread))
                return false;
            return conc__ipc_alive_as(id, 0, thread); /* out of descriptors...: ask /proc */
        }
        uint32_t now = src == TAG_SRC_START ? conc__ipc_start_tag(id) : conc__ipc_fd_tag(fd);
        bool alive = !conc__ipc_tag_differs(tag, now, mask); /* differs: the id was reused */
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (alive && poll(&pf, 1, 0) > 0 && (pf.revents & (POLLIN | POLLHUP)))
            alive = false; /* exited (a zombie until reaped) */
        close(fd);
        return alive;
    }
    if (!conc__ipc_alive_as(id, 0, thread))
        return false;
    /* No pidfs here: an inode tag cannot be checked, a start time can. */
    return !conc__ipc_tag_differs(tag, conc__ipc_start_tag(id), mask);
}

/* ------------------------------------------------------------- the MAC */

static uint64_t conc__ipc_key[2];
static pthread_once_t conc__ipc_key_once = PTHREAD_ONCE_INIT;

static void conc__ipc_key_init(void)
{
    if (getrandom(conc__ipc_key, sizeof conc__ipc_key, 0) != (ssize_t)sizeof conc__ipc_key) {
        uint64_t x = (uint64_t)conc__now_ns() ^ (uint64_t)(uintptr_t)&conc__ipc_key ^ ((uint64_t)getpid() << 40);
        for (int i = 0; i < 2; i++) {
            x += 0x9e3779b97f4a7c15ull;
            uint64_t z = x;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            conc__ipc_key[i] = z ^ (z >> 31);
        }
    }
}

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1, v1 = ROTL(v1, 13), v1 ^= v0, v0 = ROTL(v0, 32);                                  \
        v2 += v3, v3 = ROTL(v3, 16), v3 ^= v2;                                                     \
        v0 += v3, v3 = ROTL(v3, 21), v3 ^= v0;                                                     \
        v2 += v1, v1 = ROTL(v1, 17), v1 ^= v2, v2 = ROTL(v2, 32);                                  \
    } while (0)

uint64_t conc__ipc_mac(uint64_t a, uint64_t b, uint64_t c)
{
    pthread_once(&conc__ipc_key_once, conc__ipc_key_init);
    uint64_t k0 = conc__ipc_key[0], k1 = conc__ipc_key[1];
    uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
    const uint64_t m[4] = {a, b, c, (uint64_t)24 << 56};
    for (int i = 0; i < 4; i++) {
        v3 ^= m[i];
        SIPROUND;
        SIPROUND;
        v0 ^= m[i];
    }
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ------------------------------------------------------ mapping checks */

#define MAPCACHE 8
static __thread struct {
    uintptr_t lo, hi; /* a mapping seen in /proc/self/maps */
    unsigned gen;
} conc__ipc_maps[MAPCACHE];
static __thread unsigned conc__ipc_maps_next;
/* Bumped after conc unmaps shared memory (conc_shared_free,
 * conc_shm_close): cached ranges may be gone. A mapping the program
 * unmaps itself and maps again at the same place with another size is
 * not seen until the next of those. */
static _Atomic unsigned conc__ipc_maps_gen = 1;

void conc__ipc_unmapping(void) { atomic_fetch_add_explicit(&conc__ipc_maps_gen, 1u, memory_order_release); }

static bool conc__ipc_maps_find(uintptr_t p, uintptr_t *lo, uintptr_t *hi)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return false;
    char line[512];
    bool found = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) == 2 && p >= a && p < b) {
            *lo = a, *hi = b;
            found = true;
            break;
        }
        if (!strchr(line, '\n')) { /* a long line (a path): skip its rest */
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n') {
            }
        }
    }
    fclose(f);
    return found;
}

bool conc__ipc_in_mapping(const void *a, size_t alen, const void *b, size_t blen)
{
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    if (pa + alen < pa || pb + blen < pb)
        return false;
    unsigned gen = atomic_load_explicit(&conc__ipc_maps_gen, memory_order_acquire);
    for (int i = 0; i < MAPCACHE; i++) {
        if (conc__ipc_maps[i].gen == gen && pa >= conc__ipc_maps[i].lo && pa + alen <= conc__ipc_maps[i].hi)
            return pb >= conc__ipc_maps[i].lo && pb + blen <= conc__ipc_maps[i].hi;
    }
    uintptr_t lo, hi;
    if (!conc__ipc_maps_find(pa, &lo, &hi)) {
        /* no /proc: allow only a lock within the same page as a */
        uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
        return pb / pg == pa / pg && (pb + blen - 1) / pg == pa / pg;
    }
    unsigned k = conc__ipc_maps_next++ % MAPCACHE;
    conc__ipc_maps[k].lo = lo;
    conc__ipc_maps[k].hi = hi;
    conc__ipc_maps[k].gen = gen;
    return pa + alen <= hi && pb >= lo && pb + blen <= hi;
}

uint64_t conc__ipc_pidns(void)
{
    struct stat s;
    if (stat("/proc/self/ns/pid", &s) != 0)
        return 0;
    return (uint64_t)s.st_ino;
}

bool conc__ipc_spin(bool (*ready)(void *), void *arg, int64_t deadline)
{
    return conc__spin_until(ready, arg, deadline);
}

/* ------------------------------------------------ anonymous shared memory
 * The returned pointer stays page aligned: the mapping's size lives at the
 * end of one leading page. That page is private (MAP_PRIVATE over the
 * first page of the shared mapping): a fork child that writes it changes
 * only its own copy, so it cannot choose what our conc_shared_free
 * unmaps. */
#define CONC__SHARED_MAGIC 0x636f6e6373686172ull /* "concshar" */

int conc_shared_alloc(size_t size, void **out)
{
    if (!out || size == 0)
        return CONC_EINVAL;
    *out = NULL;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    if (size > SIZE_MAX - 2 * pg)
        return CONC_ENOMEM;
    size_t total = pg + ((size + pg - 1) / pg) * pg;
    void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return CONC_ENOMEM;
    if (mmap(m, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != m) {
        munmap(m, total);
        return CONC_ENOMEM;
    }
    uint64_t *h = (uint64_t *)((char *)m + pg - 16);
    h[0] = CONC__SHARED_MAGIC;
    h[1] = total;
    *out = (char *)m + pg;
    return 0;
}

void conc_shared_free(void *p)
{
    if (!p)
        return;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    uint64_t *h = (uint64_t *)((char *)p - 16);
    if (((uintptr_t)p & (pg - 1)) != 0 || h[0] != CONC__SHARED_MAGIC)
        return; /* not ours: leave it alone */
    munmap((char *)p - pg, (size_t)h[1]);
    conc__ipc_unmapping(); /* after: a lookup racing the munmap is forgotten too */
}
