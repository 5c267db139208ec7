/*
 * shm.c — multiprocessing.shared_memory.SharedMemory, and the sweep that
 * replaces Python's resource_tracker.
 *
 * A conc segment is the caller's size rounded up to 64 bytes, then a
 * 64-byte trailer:
 *
 *     magic | size | pidns | owner start time | owner pid | flags | seq | check
 *
 * The data starts at offset 0 (page aligned; a foreign program attaching
 * the segment sees the caller's bytes where it expects them). The trailer
 * names the owning process three ways at once — pid, start time (field 22
 * of /proc/<pid>/stat, so a recycled pid is not mistaken for the owner)
 * and pid-namespace inode (a sweeper in another namespace leaves it
 * alone). conc_shm_adopt rewrites the owner under a seqlock (seq odd while
 * writing); a sweeper that sees an odd or changing seq skips the segment.
 *
 * The sweep lists /dev/shm, reads the trailer of every regular file it can
 * open whose size fits the layout, and unlinks those whose owner has ended
 * (gone or zombie), unless they are untracked. It runs before every
 * create and on demand (conc_shm_sweep). Before the unlink it checks that
 * the name still refers to the inode whose trailer it read.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ipc/internal.h"

#define MAGIC 0x31764d48536e6f63ull /* "concSHMv1" (8 bytes of it) */
#define TRAILER 64
#define SHM_DIR "/dev/shm"
#define NAME_MAX_LEN 250

typedef struct conc__shm_trailer {
    uint64_t magic;
    uint64_t size;
    uint64_t pidns;
    uint64_t start;
    int32_t pid;
    uint32_t flags;
    uint32_t seq;
    uint32_t reserved;
    uint64_t check;
    uint64_t pad;
} conc__shm_trailer_t;
_Static_assert(sizeof(conc__shm_trailer_t) == TRAILER, "trailer is 64 bytes");

struct conc_shm {
    void *base;
    size_t size;  /* the caller's bytes */
    size_t total; /* the mapping */
    bool ours;    /* a conc segment (has a trailer) */
    char name[NAME_MAX_LEN + 2]; /* with the leading '/' */
};

static size_t conc__shm_round(size_t n) { return (n + TRAILER - 1) / TRAILER * TRAILER; }

static uint64_t conc__shm_check(const conc__shm_trailer_t *t)
{
    uint64_t h = t->magic ^ (t->size * 0x9e3779b97f4a7c15ull);
    h ^= (t->pidns + 0x632be59bd9b4e019ull) * 0xbf58476d1ce4e5b9ull;
    h ^= (t->start ^ ((uint64_t)(uint32_t)t->pid << 32) ^ t->flags) * 0x94d049bb133111ebull;
    return h;
}

static bool conc__shm_valid(const conc__shm_trailer_t *t, uint64_t file_size)
{
    return t->magic == MAGIC && t->check == conc__shm_check(t) && t->size > 0 &&
           t->size <= file_size && conc__shm_round((size_t)t->size) + TRAILER == file_size;
}

/* "/name" from "name" or "/name"; false when invalid. */
static bool conc__shm_fullname(const char *name, char *out)
{
    if (name[0] == '/')
        name++;
    size_t n = strlen(name);
    if (n == 0 || n > NAME_MAX_LEN || strchr(name, '/') || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0)
        return false;
    out[0] = '/';
    memcpy(out + 1, name, n + 1);
    return true;
}

/* This process as an owner (cached per pid). */
static void conc__shm_me(pid_t *pid, uint64_t *start, uint64_t *ns)
{
    static _Atomic pid_t cached_pid;
    static _Atomic uint64_t cached_start, cached_ns;
    pid_t me = conc__ipc_pid();
    if (atomic_load(&cached_pid) != me) {
        atomic_store(&cached_start, conc__ipc_start_time(me));
        atomic_store(&cached_ns, conc__ipc_pidns());
        atomic_store(&cached_pid, me);
    }
    *pid = me;
    *start = atomic_load(&cached_start);
    *ns = atomic_load(&cached_ns);
}

static void conc__shm_set_owner(conc__shm_trailer_t *t)
{
    pid_t pid;
    uint64_t start, ns;
    conc__shm_me(&pid, &start, &ns);
    /* odd while writing; the acquire half keeps the writes below it */
    uint32_t s = atomic_fetch_or_explicit(CONC__IA(&t->seq), 1u, memory_order_acq_rel);
    t->pid = pid;
    t->start = start;
    t->pidns = ns;
    t->check = conc__shm_check(t);
    atomic_store_explicit(CONC__IA(&t->seq), (s | 1u) + 1u, memory_order_release);
}

/* ------------------------------------------------------------------ sweep */

/* Should the segment behind fd (named dir/name) go? */
static bool conc__shm_dead(int fd, const struct stat *st, uint64_t my_ns)
{
    if (!S_ISREG(st->st_mode) || st->st_size < 2 * TRAILER || st->st_size % TRAILER != 0)
        return false;
    conc__shm_trailer_t a, b;
    off_t off = st->st_size - TRAILER;
    if (pread(fd, &a, sizeof a, off) != (ssize_t)sizeof a)
        return false;
    if (!conc__shm_valid(&a, (uint64_t)st->st_size) || (a.seq & 1u) || (a.flags & CONC_SHM_UNTRACKED))
        return false;
    if (a.pidns != my_ns || a.pid <= 0)
        return false;
    if (conc__ipc_alive(a.pid, a.start))
        return false;
    /* re-read: an adopt in between shows as a changed seq */
    if (pread(fd, &b, sizeof b, off) != (ssize_t)sizeof b || memcmp(&a, &b, sizeof a) != 0)
        return false;
    return true;
}

int conc_shm_sweep(void)
{
    DIR *d = opendir(SHM_DIR);
    if (!d)
        return CONC_ESYS;
    pid_t me;
    uint64_t start, ns;
    conc__shm_me(&me, &start, &ns);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || (e->d_type != DT_REG && e->d_type != DT_UNKNOWN))
            continue;
        if (strncmp(e->d_name, "sem.", 4) == 0) /* POSIX named semaphores */
            continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            continue;
        struct stat st, now;
        bool dead = fstat(fd, &st) == 0 && conc__shm_dead(fd, &st, ns);
        close(fd);
        if (!dead)
            continue;
        /* the name must still be the file we judged */
        if (fstatat(dirfd(d), e->d_name, &now, AT_SYMLINK_NOFOLLOW) != 0 || now.st_ino != st.st_ino ||
            now.st_dev != st.st_dev)
            continue;
        char full[NAME_MAX_LEN + 2];
        if (conc__shm_fullname(e->d_name, full) && shm_unlink(full) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* ------------------------------------------------------------ create etc. */

static int conc__shm_map(conc_shm_t *s, int fd, size_t total)
{
    void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        return errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS;
    s->base = m;
    s->total = total;
    return 0;
}

static void conc__shm_random_name(char *out)
{
    unsigned char r[8];
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        uint64_t x = (uint64_t)conc__now_ns() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)out;
        for (int i = 0; i < 8; i++, x = x * 6364136223846793005ull + 1442695040888963407ull)
            r[i] = (unsigned char)(x >> 56);
    }
    int k = sprintf(out, "/psm_");
    for (int i = 0; i < 8; i++)
        k += sprintf(out + k, "%02x", r[i]);
}

int conc_shm_create(const char *name, size_t size, int flags, conc_shm_t **out)
{
    if (!out)
        return CONC_EINVAL;
    *out = NULL;
    if (size == 0 || (flags & ~CONC_SHM_UNTRACKED) || size > SIZE_MAX / 2)
        return CONC_EINVAL;
    conc_shm_t *s = calloc(1, sizeof *s);
    if (!s)
        return CONC_ENOMEM;
    if (name && !conc__shm_fullname(name, s->name)) {
        free(s);
        return CONC_EINVAL;
    }
    conc_shm_sweep();
    size_t total = conc__shm_round(size) + TRAILER;
    int fd;
    for (int tries = 0;; tries++) {
        if (!name)
            conc__shm_random_name(s->name);
        fd = shm_open(s->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0 || name || errno != EEXIST || tries > 100)
            break;
    }
    if (fd < 0) {
        int e = errno;
        free(s);
        errno = e;
        return CONC_ESYS;
    }
    int rc = ftruncate(fd, (off_t)total) == 0 ? conc__shm_map(s, fd, total) : CONC_ESYS;
    if (rc) {
        int e = errno;
        shm_unlink(s->name);
        close(fd);
        free(s);
        errno = e;
        return rc;
    }
    close(fd);
    conc__shm_trailer_t *t = (conc__shm_trailer_t *)((char *)s->base + total - TRAILER);
    t->magic = MAGIC;
    t->size = size;
    t->flags = (uint32_t)flags;
    conc__shm_set_owner(t);
    s->size = size;
    s->ours = true;
    *out = s;
    return 0;
}

int conc_shm_attach(const char *name, conc_shm_t **out)
{
    if (!out)
        return CONC_EINVAL;
    *out = NULL;
    if (!name)
        return CONC_EINVAL;
    conc_shm_t *s = calloc(1, sizeof *s);
    if (!s)
        return CONC_ENOMEM;
    if (!conc__shm_fullname(name, s->name)) {
        free(s);
        return CONC_EINVAL;
    }
    int fd = shm_open(s->name, O_RDWR | O_CLOEXEC, 0);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        free(s);
        errno = e;
        return CONC_ESYS;
    }
    int rc = CONC_EINVAL; /* an empty segment cannot be mapped */
    if (st.st_size > 0)
        rc = conc__shm_map(s, fd, (size_t)st.st_size);
    close(fd);
    if (rc) {
        free(s);
        return rc;
    }
    s->size = s->total;
    if (s->total >= 2 * TRAILER) {
        /* One copy of the trailer (a peer may rewrite it at any time):
         * checked and used from the copy only. */
        conc__shm_trailer_t t;
        memcpy(&t, (char *)s->base + s->total - TRAILER, sizeof t);
        if (conc__shm_valid(&t, s->total)) {
            s->ours = true;
            s->size = (size_t)t.size;
        }
    }
    *out = s;
    return 0;
}

void *conc_shm_buf(const conc_shm_t *s) { return s ? s->base : NULL; }
size_t conc_shm_size(const conc_shm_t *s) { return s ? s->size : 0; }
const char *conc_shm_name(const conc_shm_t *s) { return s ? s->name + 1 : NULL; }

int conc_shm_unlink(conc_shm_t *s)
{
    if (!s)
        return CONC_EINVAL;
    return shm_unlink(s->name) == 0 ? 0 : CONC_ESYS;
}

int conc_shm_unlink_name(const char *name)
{
    char full[NAME_MAX_LEN + 2];
    if (!name || !conc__shm_fullname(name, full))
        return CONC_EINVAL;
    return shm_unlink(full) == 0 ? 0 : CONC_ESYS;
}

int conc_shm_adopt(conc_shm_t *s)
{
    if (!s || !s->ours)
        return CONC_EINVAL;
    conc__shm_set_owner((conc__shm_trailer_t *)((char *)s->base + s->total - TRAILER));
    return 0;
}

int conc_shm_close(conc_shm_t *s)
{
    if (!s)
        return 0;
    if (s->base) {
        munmap(s->base, s->total);
        conc__ipc_unmapping(); /* after: a lookup racing the munmap is forgotten too */
    }
    free(s);
    return 0;
}

pid_t conc__shm_owner(const conc_shm_t *s)
{
    if (!s || !s->ours)
        return 0;
    int32_t pid = atomic_load_explicit(
        CONC__IA(&((conc__shm_trailer_t *)((char *)s->base + s->total - TRAILER))->pid), memory_order_relaxed);
    return pid > 0 ? pid : 0;
}
