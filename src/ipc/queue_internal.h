/* queue_internal.h — layout of a conc_mpqueue segment (private; see
 * src/ipc/queue.c for the algorithm). Everything in the segment is plain
 * data at fixed offsets: no pointers, since each process maps it at its
 * own address. */
#ifndef CONC_IPC_QUEUE_INTERNAL_H
#define CONC_IPC_QUEUE_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "conc/ipc_queue.h"

#define CONC__MPQ_MAGIC 0x636f6e634d505131ull /* "concMPQ1" */
#define CONC__MPQ_VERSION 4u
#define CONC__MPQ_HDR 8u        /* per-message header: u32 length + u32 mark */
#define CONC__MPQ_MARK 0x51504d43ull /* nonzero: a published header */
#define CONC__MPQ_LINE 64

/* One side's operation in progress, valid while `valid` is 1: it moves
 * the side's position from pos to pos + size and its count from count to
 * count + 1. Whether it took effect is decided by its one commit store
 * (put: the message header at pos; get: head); a process that dies with
 * valid set leaves the next lock holder to finish or undo the rest. */
typedef struct conc__mpq_journal {
    uint64_t pos;
    uint64_t size;
    uint64_t count;
    uint32_t valid;
} conc__mpq_journal_t;

/* One side (producers or consumers): its lock and what only the lock
 * holder writes. The lock word is 0 when free, else the holder's thread
 * id (low 32 bits, the futex word), the low 31 bits of that thread's
 * tag (pidfs inode or start time, src/ipc/common.c; bits 32-62; 0 when
 * unknown), which tells a reused thread id from the dead holder's, and bit 63 when the holder keeps the lock
 * between operations (biased; see queue.c). */
typedef struct conc__mpq_side {
    uint64_t lock;
    uint32_t lock_sleepers;    /* waiters in (or entering) the futex wait */
    uint32_t busy;             /* a biased holder is inside an operation */
    uint32_t revoked;          /* someone else wanted a biased lock: no more bias */
    conc__mpq_journal_t j;
    uint64_t peer_pos;         /* cached copy of the other side's position */
    uint64_t peer_count;       /* cached copy of the other side's count */
} conc__mpq_side_t;

/* A futex-backed wait: sleepers counts the processes/threads inside (or
 * about to enter) the futex wait on seq. */
typedef struct conc__mpq_wait {
    uint32_t sleepers;
    uint32_t seq;
} conc__mpq_wait_t;

typedef struct conc__mpq_shm {
    /* immutable after creation */
    uint64_t magic;
    uint32_t version;
    uint32_t kind;
    uint64_t cap;        /* ring bytes, a power of two */
    uint64_t maxsize;    /* 0: no item limit */
    uint64_t map_size;   /* whole segment */
    uint64_t data_off;   /* ring offset in the segment */
    uint64_t recoveries; /* atomic */

    _Alignas(CONC__MPQ_LINE) conc__mpq_side_t put;
    _Alignas(CONC__MPQ_LINE) conc__mpq_side_t get;
    /* published positions, each on its own line (read by the other side) */
    _Alignas(CONC__MPQ_LINE) uint64_t tail; /* bytes ever put (may lag a header) */
    uint64_t puts;                           /* messages ever put (may lead it)   */
    _Alignas(CONC__MPQ_LINE) uint64_t head; /* bytes ever taken */
    uint64_t gets;                           /* messages ever taken */
    _Alignas(CONC__MPQ_LINE) conc__mpq_wait_t nonempty;
    _Alignas(CONC__MPQ_LINE) conc__mpq_wait_t nonfull;
    _Alignas(CONC__MPQ_LINE) uint64_t done; /* task_done calls (joinable) */
    conc__mpq_wait_t alldone;
} conc__mpq_shm_t;

struct conc_mpqueue {
    conc__mpq_shm_t *shm;  /* NULL once closed */
    unsigned char *ring;
    size_t map_size;
    int fd;
    int kind;
    uint64_t cap, mask;    /* checked copies of the header's (read once at attach) */
    uint64_t maxsize;
    atomic_int users;      /* calls in progress in this process */
    atomic_int closed;
    atomic_int broken;     /* a shared field broke an invariant: CONC_EBROKEN */
};

/* Tests only: called by conc_mpqueue_attach between its checks of the
 * header and the handle's making (a test flips fields there, as a peer
 * racing the attach could). */
extern void (*conc__mpq_attach_hook)(conc__mpq_shm_t *s);

#endif
