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
#include <sys/mman.h>
#include <sys/stat.h>
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

/* Reads /proc/<pid>/stat: its state letter and start time (field 22).
 * Returns false when the file cannot be read. */
static bool conc__ipc_stat(pid_t pid, char *state, uint64_t *start)
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
    /* p+2 is field 3 (state); the start time is field 22. */
    char *q = p + 2;
    for (int f = 3; f < 22 && q; f++) {
        q = strchr(q, ' ');
        if (q)
            q++;
    }
    *start = q ? strtoull(q, NULL, 10) : 0;
    return true;
}

uint64_t conc__ipc_start_time(pid_t pid)
{
    char st;
    uint64_t t;
    return conc__ipc_stat(pid, &st, &t) ? t : 0;
}

bool conc__ipc_alive(pid_t pid, uint64_t start_time)
{
    if (pid <= 0)
        return false;
    char st;
    uint64_t t;
    if (!conc__ipc_stat(pid, &st, &t)) {
        /* Gone, or /proc hides it (hidepid): ask kill(0). */
        return kill(pid, 0) == 0 || errno == EPERM;
    }
    if (st == 'Z' || st == 'X' || st == 'x')
        return false;
    return start_time == 0 || t == start_time;
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
 * end of one leading page. */
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
}
