/*
 * array.c — multiprocessing.Value / Array: a named SharedMemory segment
 * holding a 64-byte header (magic, element size, count, lock flag, the
 * process-shared RLock) and then the elements, 64-byte aligned. Being a
 * named segment, it is inherited by fork children and attachable by name
 * from spawned ones; being a conc segment, the sweep removes it if its
 * creator dies without freeing it.
 *
 * A caller's lock (Value(..., lock=<a Lock or RLock>)): the header says
 * has_lock 2 and the handle points at the caller's process-shared lock
 * (its memory must be shared with every process that uses the handle: a
 * fork child inherits both). A handle attached by name cannot reach a
 * caller's lock: it has none (acquire is CONC_EINVAL there).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/internal.h"

#define MAGIC 0x79617272416e6f63ull /* "concArray" */
#define HEADER 64

typedef struct conc__array_hdr {
    uint64_t magic;
    uint64_t elem_size;
    uint64_t n;
    uint32_t has_lock;
    uint32_t reserved;
    conc_prlock_t lock;
} conc__array_hdr_t;
_Static_assert(sizeof(conc__array_hdr_t) <= HEADER, "array header fits");

/* The header is shared memory a peer may rewrite: the handle keeps checked
 * copies of its fields, read once when it is made, and never reads them
 * again. */
struct conc_array {
    conc_shm_t *shm;
    conc__array_hdr_t *hdr;
    void *data;
    size_t elem_size, n;
    bool has_lock;          /* its own RLock in the header */
    conc_prlock_t *ext_rlock; /* or a caller's lock */
    conc_plock_t *ext_lock;
    pid_t creator; /* pid that created it in this handle's history, 0 if attached */
};

static int conc__array_wrap(conc_shm_t *shm, pid_t creator, size_t elem_size, size_t n, bool has_lock,
                            conc_array_t **out)
{
    conc_array_t *a = calloc(1, sizeof *a);
    if (!a)
        return CONC_ENOMEM;
    a->shm = shm;
    a->hdr = conc_shm_buf(shm);
    a->data = (char *)a->hdr + HEADER;
    a->elem_size = elem_size;
    a->n = n;
    a->has_lock = has_lock;
    a->creator = creator;
    *out = a;
    return 0;
}

int conc_array_new(size_t elem_size, size_t n, const void *init, bool lock, conc_array_t **out)
{
    if (!out)
        return CONC_EINVAL;
    *out = NULL;
    if (elem_size == 0 || n == 0 || n > (SIZE_MAX / 2 - HEADER) / elem_size)
        return CONC_EINVAL;
    conc_shm_t *shm;
    int rc = conc_shm_create(NULL, HEADER + elem_size * n, 0, &shm);
    if (rc)
        return rc;
    conc__array_hdr_t *h = conc_shm_buf(shm);
    h->elem_size = elem_size;
    h->n = n;
    h->has_lock = lock;
    conc_prlock_init(&h->lock);
    if (init)
        memcpy((char *)h + HEADER, init, elem_size * n);
    atomic_store_explicit(CONC__IA(&h->magic), MAGIC, memory_order_release);
    rc = conc__array_wrap(shm, conc__ipc_pid(), elem_size, n, lock, out);
    if (rc) {
        conc_shm_unlink(shm);
        conc_shm_close(shm);
    }
    return rc;
}

int conc_array_new_with_lock(size_t elem_size, size_t n, const void *init, conc_prlock_t *rlock,
                             conc_plock_t *lock, conc_array_t **out)
{
    if (!out)
        return CONC_EINVAL;
    *out = NULL;
    if (!rlock == !lock)
        return CONC_EINVAL; /* exactly one */
    int rc = conc_array_new(elem_size, n, init, false, out);
    if (rc)
        return rc;
    conc__array_hdr_t *h = (*out)->hdr;
    atomic_store_explicit(CONC__IA(&h->has_lock), 2u, memory_order_relaxed);
    (*out)->ext_rlock = rlock;
    (*out)->ext_lock = lock;
    return 0;
}

int conc_value_new_with_lock(size_t size, const void *init, conc_prlock_t *rlock, conc_plock_t *lock,
                             conc_value_t **out)
{
    return conc_array_new_with_lock(size, 1, init, rlock, lock, out);
}

int conc_value_new(size_t size, const void *init, bool lock, conc_value_t **out)
{
    return conc_array_new(size, 1, init, lock, out);
}

int conc_array_attach(const char *name, conc_array_t **out)
{
    if (!out)
        return CONC_EINVAL;
    *out = NULL;
    conc_shm_t *shm;
    int rc = conc_shm_attach(name, &shm);
    if (rc)
        return rc;
    conc__array_hdr_t *h = conc_shm_buf(shm);
    size_t sz = conc_shm_size(shm);
    if (sz < HEADER || ((uintptr_t)h & 7)) {
        conc_shm_close(shm);
        return CONC_EINVAL;
    }
    /* each field once; checks and the handle use the copies */
    uint64_t magic = atomic_load_explicit(CONC__IA(&h->magic), memory_order_acquire);
    uint64_t es = atomic_load_explicit(CONC__IA(&h->elem_size), memory_order_relaxed);
    uint64_t n = atomic_load_explicit(CONC__IA(&h->n), memory_order_relaxed);
    uint32_t has_lock = atomic_load_explicit(CONC__IA(&h->has_lock), memory_order_relaxed);
    if (magic != MAGIC || es == 0 || n == 0 || n > (sz - HEADER) / es || has_lock > 2) {
        conc_shm_close(shm);
        return CONC_EINVAL;
    }
    rc = conc__array_wrap(shm, 0, (size_t)es, (size_t)n, has_lock == 1, out);
    if (rc)
        conc_shm_close(shm);
    return rc;
}

void *conc_array_ptr(const conc_array_t *a) { return a ? a->data : NULL; }
size_t conc_array_len(const conc_array_t *a) { return a ? a->n : 0; }
size_t conc_array_elem_size(const conc_array_t *a) { return a ? a->elem_size : 0; }
const char *conc_array_name(const conc_array_t *a) { return a ? conc_shm_name(a->shm) : NULL; }

conc_prlock_t *conc_array_get_lock(const conc_array_t *a)
{
    return !a ? NULL : a->has_lock ? &a->hdr->lock : a->ext_rlock;
}

conc_plock_t *conc_array_get_plock(const conc_array_t *a) { return a ? a->ext_lock : NULL; }

int conc_array_acquire(conc_array_t *a, bool blocking, double timeout)
{
    if (a && a->ext_rlock)
        return conc_prlock_acquire(a->ext_rlock, blocking, timeout);
    if (a && a->ext_lock)
        return conc_plock_acquire(a->ext_lock, blocking, timeout);
    if (!a || !a->has_lock)
        return CONC_EINVAL;
    /* CONC_EOWNERDEAD: taken over from a holder that died holding it; the
     * elements may be half-written (the caller holds the lock: repair) */
    return conc_prlock_acquire(&a->hdr->lock, blocking, timeout);
}

int conc_array_release(conc_array_t *a)
{
    if (a && a->ext_rlock)
        return conc_prlock_release(a->ext_rlock);
    if (a && a->ext_lock)
        return conc_plock_release(a->ext_lock);
    if (!a || !a->has_lock)
        return CONC_EINVAL;
    return conc_prlock_release(&a->hdr->lock);
}

int conc_array_unlink(conc_array_t *a)
{
    if (!a)
        return CONC_EINVAL;
    return conc_shm_unlink(a->shm);
}

int conc_array_free(conc_array_t *a)
{
    if (!a)
        return 0;
    if (a->creator && a->creator == conc__ipc_pid()) {
        int e = errno;
        conc_shm_unlink(a->shm); /* ENOENT if already unlinked: fine */
        errno = e;
    }
    conc_shm_close(a->shm);
    free(a);
    return 0;
}
