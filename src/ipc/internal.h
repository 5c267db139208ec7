/* ipc/internal.h — shared internals of src/ipc (private).
 *
 * - conc__ipc_pid()/conc__ipc_tid(): the caller's pid / thread id, cached
 *   (glibc's getpid is a syscall) and refreshed in fork children.
 * - conc__ipc_alive(pid): does that process (or thread id) still run?
 *   false when it is gone or a zombie (a process whose main thread exited
 *   while others run is alive); start_time, when nonzero, must match
 *   field 22 of /proc/<pid>/stat (defeats pid reuse).
 * - conc__ipc_start_time(pid): that field, 0 if unknown.
 * - conc__ipc_pidns(): inode of the caller's pid namespace.
 * - conc__pwait(word, expect, deadline): a shared futex sleep that counts
 *   itself in *sleepers, so wakers call the kernel only when someone
 *   sleeps; conc__pwake(word, sleepers, n) is the matching wake. It is
 *   colorless: callers handle an interruption (kill, Timeout scope) by
 *   looking once more at their condition — satisfied: succeed and
 *   conc__cut_rearm; else return the interruption.
 */
#ifndef CONC_IPC_INTERNAL_H
#define CONC_IPC_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "conc/ipc.h"
#include "core/futex.h"
#include "core/shwait.h"
#include "core/time.h"

#define CONC__IA(p) ((_Atomic __typeof__(*(p)) *)(p))

pid_t conc__ipc_pid(void);
pid_t conc__ipc_tid(void);
bool conc__ipc_alive(pid_t pid, uint64_t start_time);
uint64_t conc__ipc_start_time(pid_t pid);
uint64_t conc__ipc_pidns(void);

/* Holder identity beyond the id (a pid or a thread id, which the kernel
 * reuses): a 32-bit tag of that process/thread's incarnation — its two
 * low bits name the source (pidfs inode or start time: tags of different
 * sources are never compared), the other bits a digest of its pidfs
 * inode number (unique per process or thread since
 * boot; Linux 6.9+), else of its start time (clock ticks, /proc). 0 when
 * unknown. conc__ipc_my_tag is the caller's (cached; thread: of the
 * calling thread, else of its process). conc__ipc_holder_alive: does the
 * process (thread) id, whose tag was tag (0: unknown, not compared; only
 * the bits in mask are), still run? False when it ended, is a zombie, or
 * its id now names another incarnation (reused). */
uint32_t conc__ipc_tag(pid_t id, bool thread);
uint32_t conc__ipc_my_tag(bool thread);
bool conc__ipc_holder_alive(pid_t id, uint32_t tag, uint32_t mask, bool thread);

/* A keyed 64-bit MAC (SipHash-2-4) of three words under a key made at
 * random once per address space (fork children share it; an exec'd or
 * unrelated process has another): proves that a value in shared memory
 * was written by this address space or a fork relative, not forged. */
uint64_t conc__ipc_mac(uint64_t a, uint64_t b, uint64_t c);

/* Do [a, a+alen) and [b, b+blen) lie in one mapping of this process (one
 * line of /proc/self/maps)? For a pointer computed from a shared offset.
 * Answers are cached per thread. */
bool conc__ipc_in_mapping(const void *a, size_t alen, const void *b, size_t blen);
/* Call after conc unmaps shared memory: forgets the cached answers (a
 * thread that read /proc/self/maps before the munmap ended caches a range
 * under the old generation only). */
void conc__ipc_unmapping(void);

/* How often a sleeping lock waiter checks that the holder lives (ns). */
#define CONC__IPC_CHECK_NS (50 * 1000 * 1000)

/* Sleep on *word while it equals expect, until woken, the deadline, or
 * (with check) the next liveness check — colorless (core/shwait.h): a
 * green thread parks alone, and a kill or a Timeout scope cuts the sleep.
 * Returns 0, CONC_ETIMEDOUT, or an interruption (CONC_EKILLED...; tell a
 * scope's CONC_ETIMEDOUT from the deadline's with conc__is_cut
 * right after the call). A green thread's sleep is done by the waiter
 * thread, which counts as this sleeper for as long as the call lasts. */
static inline int conc__pwait(uint32_t *word, uint32_t *sleepers, uint32_t expect, int64_t deadline)
{
    /* The kernel orders this increment before its read of *word (a full
     * barrier in futex_wait / futex_waitv, which runs after the hand-off);
     * the waker's seq_cst store of *word and seq_cst load of *sleepers
     * pair with it. */
    atomic_fetch_add_explicit(CONC__IA(sleepers), 1u, memory_order_seq_cst);
    int r = conc__shared_wait(word, expect, deadline);
    atomic_fetch_sub_explicit(CONC__IA(sleepers), 1u, memory_order_relaxed);
    return r;
}

/* Call after a seq_cst store/RMW that changed *word. */
static inline void conc__pwake(uint32_t *word, uint32_t *sleepers, int n)
{
    if (atomic_load_explicit(CONC__IA(sleepers), memory_order_seq_cst) != 0)
        conc__futex_wake(word, n, 1);
}

/* The owner pid recorded in a conc segment's trailer (0: none). */
pid_t conc__shm_owner(const conc_shm_t *s);

/* For the condition: drop every level of an owned RLock (returns it) /
 * take it back; take a Lock, waiting as long as needed. The takers return
 * 0 or CONC_EOWNERDEAD (taken over from a dead holder). */
uint32_t conc__prlock_release_all(conc_prlock_t *r);
int conc__prlock_restore(conc_prlock_t *r, uint32_t n);
int conc__plock_lock_forever(conc_plock_t *l);

/* Bounded spin on ready(arg) (true when it became ready). */
bool conc__ipc_spin(bool (*ready)(void *), void *arg, int64_t deadline);

/* conn.c, for connection.wait (connwait.c): 1 when c is ready without
 * its fd — a message (or part of one) already sits in its buffer, or it
 * is broken (recv reports that at once); 0 when only its fd can tell;
 * CONC_EINVAL (NULL, closed, not readable). */
int conc__conn_wait_state(const conc_conn_t *c);

#endif
