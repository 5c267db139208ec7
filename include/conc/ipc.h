/*
 * conc/ipc.h — multiprocessing's communication and sharing:
 * Pipe/Connection, SharedMemory, Value/Array, and the process-shared
 * Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier.
 *
 * Everything here works between processes: fork children share it by
 * inheritance; spawned (exec'd) children get a name or a file descriptor
 * through their argument bytes and attach (conc_conn_from_fd,
 * conc_shm_attach, conc_array_attach). All processes using one object must
 * live in the same pid namespace (owner liveness checks compare pids).
 *
 * Errors follow conc/base.h: 0 or a negative CONC_E* code. CONC_ESYS means
 * the kernel refused; errno then tells why (Python's OSError subclasses:
 * EEXIST = FileExistsError, ENOENT = FileNotFoundError, ...).
 */
#ifndef CONC_IPC_H
#define CONC_IPC_H

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ====================================================== Pipe / Connection
 *
 * A Connection sends and receives byte messages; message boundaries are
 * kept (each message travels as an 8-byte length and its bytes). A message
 * may be any size (16 MiB and more) and survives partial writes and
 * signals (EINTR). A small message goes out in one write; reads are
 * buffered, so a small message usually costs one read.
 *
 * Blocking: send blocks while the kernel's buffer is full (the reader must
 * read); recv blocks until a whole message is there. Use conc_conn_poll
 * to wait with a timeout. Every wait is colorless: a green thread parks
 * alone, and a conc_green_kill of it (CONC_EKILLED) or a Timeout scope
 * (CONC_ETIMEDOUT, conc/green.h; OS threads too) cuts it short — before a
 * message started the connection stays usable, in the middle of one it
 * breaks. A Connection is used by one thread at a time
 * (like Python's); after fork, each process should use only its own end.
 *
 * Ownership: conc_pipe/conc_conn_from_fd give heap handles; conc_conn_close
 * closes the descriptor and frees the handle (always, even on error).
 * Descriptors are close-on-exec unless conc_conn_set_inheritable says
 * otherwise.
 *
 * Errors: CONC_EEOF when the peer closed (Python's EOFError; also when it
 * closed in the middle of a message, which breaks the connection);
 * CONC_ERANGE when a message is longer than the reader's limit or buffer
 * (Python's "bad message length" / BufferTooShort): the connection is then
 * broken, as Python closes it; every later call on a broken connection
 * returns CONC_EINVAL (Python's "handle is closed"), as do calls in the
 * wrong direction (recv on a send-only end...). Sending to a closed peer
 * is CONC_ESYS with errno EPIPE (never a SIGPIPE; a pipe end made while
 * SIGPIPE is ignored skips the guard, which costs two syscalls per write).
 */
typedef struct conc_conn conc_conn_t;

/* multiprocessing.Pipe(duplex). duplex: both ends send and receive (a
 * socketpair(AF_UNIX, SOCK_STREAM)); otherwise *a only receives and *b only
 * sends (pipe2). Returns 0, CONC_EINVAL (NULL out-pointer), CONC_ENOMEM or
 * CONC_ESYS (out of descriptors). */
CONC_API int conc_pipe(bool duplex, conc_conn_t **a, conc_conn_t **b);

/* A Connection over an existing descriptor (a pipe end or a stream socket;
 * e.g. one a spawned child got by number). Takes ownership of fd (it is
 * not closed on failure). Returns 0, CONC_EINVAL (fd < 0, neither readable
 * nor writable, out NULL), CONC_ENOMEM. */
CONC_API int conc_conn_from_fd(int fd, bool readable, bool writable, conc_conn_t **out);

/* The descriptor (Connection.fileno()), or CONC_EINVAL for NULL/closed. */
CONC_API int conc_conn_fileno(const conc_conn_t *c);
CONC_API bool conc_conn_readable(const conc_conn_t *c);
CONC_API bool conc_conn_writable(const conc_conn_t *c);

/* Let (or stop) the descriptor survive exec, to hand it to a spawned
 * child. Returns 0, CONC_EINVAL, CONC_ESYS. */
CONC_API int conc_conn_set_inheritable(conc_conn_t *c, bool inheritable);

/* Send one message of len bytes (len may be 0). Blocks until all of it is
 * written to the kernel. Returns 0, CONC_EINVAL (NULL buf with len > 0,
 * not writable, broken), CONC_ESYS (EPIPE: the reader is gone),
 * CONC_EKILLED / CONC_ETIMEDOUT (a kill or a Timeout scope cut a wait for
 * room). A failure in the middle of a message breaks the connection. */
CONC_API int conc_conn_send_bytes(conc_conn_t *c, const void *buf, size_t len);

/* Receive one message into a new malloc'd buffer (*buf, freed by the
 * caller with free(); a zero-length message gives a valid 1-byte
 * allocation) of *len bytes. maxlength: 0 for no limit, else longer
 * messages are refused with CONC_ERANGE and break the connection. Blocks
 * until a whole message arrived. Returns 0, CONC_EEOF, CONC_ERANGE,
 * CONC_ENOMEM, CONC_EINVAL, CONC_ESYS; CONC_EKILLED / CONC_ETIMEDOUT when a
 * kill or a Timeout scope cut the wait. */
CONC_API int conc_conn_recv_bytes(conc_conn_t *c, void **buf, size_t *len, size_t maxlength);

/* Receive one message into buf (cap bytes); *len gets its length.
 * A longer message: CONC_ERANGE with *len set to its length, the message
 * is discarded and the connection broken. Otherwise as recv_bytes. */
CONC_API int conc_conn_recv_bytes_into(conc_conn_t *c, void *buf, size_t cap, size_t *len);

/* Wait until there is something to read (a message, or end of file — then
 * recv reports CONC_EEOF), without consuming it. timeout: 0 (or negative,
 * as Python's wait() treats it) checks, CONC_FOREVER waits. Returns 0
 * (Python's True), CONC_ETIMEDOUT (False, or a Timeout scope ran out),
 * CONC_EKILLED (a killed green thread),
 * CONC_EINVAL (bad timeout, not readable, broken), CONC_ESYS. */
CONC_API int conc_conn_poll(conc_conn_t *c, double timeout);

/* multiprocessing.reduction.send_handle(conn, fd, pid): pass a copy of fd
 * to the peer (SCM_RIGHTS) as one message. Only over a socket: a duplex
 * Pipe (conc_pipe(true, ...)) or a Connection over a Unix stream socket.
 * fd stays open here (close it if you are done with it). Blocks as
 * send_bytes. Returns 0; CONC_ENOTSUP (not a socket: a simplex Pipe is an
 * OS pipe, which cannot carry fds); CONC_EINVAL (NULL, broken, not
 * writable, fd negative or not open); CONC_ESYS; CONC_EKILLED /
 * CONC_ETIMEDOUT (cut short, as send_bytes). */
CONC_API int conc_conn_send_handle(conc_conn_t *c, int fd);
/* recv_handle(conn): receive the next message, which must be a handle
 * sent by conc_conn_send_handle, and return the new fd in *fd (yours to
 * close; close-on-exec). Blocks as recv_bytes (colorless). Returns 0;
 * CONC_EBROKEN when the peer did not send exactly one fd with it (an
 * ordinary message, no fd, extra fds, control data cut short: every fd
 * that came with it is closed, *fd is -1; the message is consumed);
 * CONC_EEOF; CONC_ENOTSUP (not a socket); CONC_EINVAL (NULL, broken, not
 * readable); CONC_ESYS; CONC_EKILLED / CONC_ETIMEDOUT. Fds a peer attaches
 * to ordinary messages are closed when the next message is read, and at
 * close; never more than 32 wait. */
CONC_API int conc_conn_recv_handle(conc_conn_t *c, int *fd);

/* multiprocessing.connection.wait(object_list, timeout): one entry per
 * object — a Connection (readable end), a process sentinel (the process
 * has ended) or any raw fd (readable: data, EOF or an error). */
typedef enum conc_conn_waitable_kind {
    CONC_CONN_WAIT_CONN = 1,    /* .conn */
    CONC_CONN_WAIT_PROCESS = 2, /* .process: its sentinel */
    CONC_CONN_WAIT_FD = 3       /* .fd */
} conc_conn_waitable_kind_t;

typedef struct conc_conn_waitable {
    conc_conn_waitable_kind_t kind;
    union {
        conc_conn_t *conn;
        struct conc_process *process;
        int fd;
    } u;
    bool ready;                /* out: set by conc_conn_wait */
} conc_conn_waitable_t;

/* Wait until at least one of objs[0..n) is ready, or timeout (seconds;
 * CONC_FOREVER waits, 0 or negative checks once). Sets objs[i].ready for
 * every ready object (Python's returned list) and their number in *nready
 * (may be NULL). A Connection holding a message it has already read from
 * the kernel (buffered by an earlier recv) is ready at once — a poll(2) on
 * its fd would miss it — and so is a broken one (recv reports why). The
 * same object may appear twice. Returns 0 (at least one ready);
 * CONC_ETIMEDOUT (Python's empty list: none ready; a Timeout scope that
 * ran out says the same); CONC_EKILLED (the calling green thread was
 * killed); CONC_EINVAL (NULL objs with n > 0, n > 4096, an unknown kind, a
 * NULL / closed / write-only Connection, a negative fd, a process never
 * started or closed, NaN timeout); CONC_ESYS. Colorless: a green thread
 * parks alone (its hub watches one epoll fd holding every object). n == 0
 * waits for the timeout alone, as Python does. */
CONC_API int conc_conn_wait(conc_conn_waitable_t *objs, size_t n, double timeout, size_t *nready);

/* Close the descriptor and free the handle (c may be NULL). The peer then
 * reads CONC_EEOF once the messages already sent are read. Returns 0 or
 * CONC_ESYS (close failed; the handle is freed anyway). */
CONC_API int conc_conn_close(conc_conn_t *c);

/* ========================================================= SharedMemory
 *
 * multiprocessing.shared_memory.SharedMemory: a POSIX shared memory
 * segment (/dev/shm) found by name. Names are like Python's: "psm_" and
 * random hex when created with name NULL; a leading '/' is optional and
 * conc_shm_name gives the name without it.
 *
 * Leak cleanup (the job of Python's resource_tracker, without a tracker
 * process and without warnings): a segment created by conc carries a
 * 64-byte trailer after its data: a magic, the data size, the pid of its
 * owner, the owner's start time (from /proc/<pid>/stat, so a reused pid
 * does not look alive) and its pid namespace. The owner is the creating
 * process (conc_shm_adopt moves it). A sweep (conc_shm_sweep, and
 * conc_shm_create before it creates) unlinks every conc segment of the
 * caller's pid namespace whose owner has ended (including zombies)
 * without unlinking it. Mappings that other processes still hold stay
 * valid; only the name goes. Segments created with CONC_SHM_UNTRACKED
 * (Python's track=False) and segments not made by conc are never swept.
 * A process that wants a segment to outlive it must adopt or untrack it.
 * The sweep reads the trailer of each segment it may open; a segment
 * re-created under the same name between that read and the unlink could
 * be unlinked by mistake (a tiny window; use fresh names).
 *
 * Ownership: handles are heap objects freed by conc_shm_close (which
 * unmaps); the segment itself lives until unlinked and unmapped by all.
 */
typedef struct conc_shm conc_shm_t;

enum {
    CONC_SHM_UNTRACKED = 1 /* never swept, even if the creator dies */
};

/* Create a segment of size bytes (> 0), zero-filled, mode 0600. name NULL
 * picks a fresh "psm_..." name. flags: 0 or CONC_SHM_UNTRACKED. Sweeps
 * first (see above). Returns 0, CONC_EINVAL (size 0, out NULL, a name with
 * an inner '/', empty or longer than 250 bytes), CONC_ESYS (errno EEXIST
 * when the name is taken: FileExistsError), CONC_ENOMEM. */
CONC_API int conc_shm_create(const char *name, size_t size, int flags, conc_shm_t **out);
/* Attach to an existing segment by name (SharedMemory(name)). Its size is
 * the creator's size for conc segments, the file size for others.
 * Returns 0, CONC_EINVAL, CONC_ESYS (errno ENOENT: FileNotFoundError). */
CONC_API int conc_shm_attach(const char *name, conc_shm_t **out);
/* The mapping (SharedMemory.buf), its size, its name (owned by the
 * handle). NULL/0 for a NULL handle. */
CONC_API void *conc_shm_buf(const conc_shm_t *s);
CONC_API size_t conc_shm_size(const conc_shm_t *s);
CONC_API const char *conc_shm_name(const conc_shm_t *s);
/* Remove the name (SharedMemory.unlink); mappings stay valid. Returns 0,
 * CONC_EINVAL, CONC_ESYS (errno ENOENT when already unlinked). */
CONC_API int conc_shm_unlink(conc_shm_t *s);
/* Unlink a segment by name, without attaching. */
CONC_API int conc_shm_unlink_name(const char *name);
/* Make the calling process the segment's owner (the sweep unlinks it only
 * once this process has ended). Returns 0, CONC_EINVAL (NULL, or not a
 * conc segment), CONC_ESYS. */
CONC_API int conc_shm_adopt(conc_shm_t *s);
/* Unmap and free the handle (SharedMemory.close); does not unlink.
 * s may be NULL. Returns 0. */
CONC_API int conc_shm_close(conc_shm_t *s);
/* Unlink the conc segments whose owner has ended. Returns how many were
 * unlinked (>= 0), or CONC_ESYS when /dev/shm cannot be read. */
CONC_API int conc_shm_sweep(void);

/* ====================================================== Process-shared sync
 *
 * The multiprocessing versions of conc/sync.h's primitives. They live in
 * shared memory (a MAP_SHARED mapping: a SharedMemory segment, a struct in
 * conc_shared_alloc'd memory, a Value/Array...), hold no pointers, and may
 * be embedded in a shared struct: call the *_init function on a pointer
 * into the mapping once, before other processes use it (all-zero memory is
 * also a valid, unlocked Lock/RLock, a Semaphore of 0, a clear Event). The
 * conc_*_new helpers allocate one in an anonymous shared mapping that fork
 * children inherit; free it with conc_shared_free.
 *
 * Semantics and error codes are those of conc/sync.h (the acquire family:
 * acquire(blocking, timeout) -> 0 / CONC_ETIMEDOUT / CONC_EINVAL), except
 * for a negative timeout, which follows multiprocessing (its SemLock
 * clamps it to 0): every acquire and wait here — Lock, RLock, Semaphore,
 * Condition, Event, Barrier, Value/Array's lock — treats it as already
 * up (one try, then CONC_ETIMEDOUT; a Barrier breaks). blocking=false with
 * a timeout other than CONC_FOREVER is still CONC_EINVAL; NaN too. They
 * block on futexes on the shared words (after a short spin), and a release
 * makes a futex call only when someone sleeps. Waiters are not served in
 * strict FIFO order. Every wait is colorless: a green thread parks alone
 * (a waiter thread sleeps on the word for it), and a conc_green_kill of
 * the waiter or a Timeout scope (conc/green.h; OS threads too) ends it with
 * CONC_EKILLED / CONC_ETIMEDOUT, taking nothing — unless it was satisfied
 * at that moment: then it succeeds, and the interruption comes at the
 * next blocking call. A cut-short Barrier wait breaks the barrier.
 *
 * Owner death: a Lock stores its holder's pid, an RLock its owner's thread
 * id, each with a tag that tells that process (thread) from a later one
 * that gets the same id (the low bits of its pidfs inode number, Linux
 * 6.9+, which the kernel never reuses before reboot; on older kernels its
 * start time in clock ticks). A waiter that sleeps checks, every 50 ms,
 * whether the holder still lives: if it ended, is a zombie, or its id now
 * names another process, the waiter takes the lock over within that
 * period (so at most ~50 ms after the death, whatever happened to the pid
 * since) and its acquire returns CONC_EOWNERDEAD — like a robust mutex's
 * EOWNERDEAD: the caller holds the lock, and the data it guards may be
 * half-updated, so it should repair it before use (then release as
 * usual). conc_plock_recoveries() counts such takeovers. A non-blocking
 * acquire does not check (it reports CONC_ETIMEDOUT); a timed one checks
 * every 50 ms and once more when its timeout ends. The Condition's wait reports CONC_EOWNERDEAD when it took its
 * lock back from a dead holder (its own outcome is then unknown: treat it
 * as a spurious wakeup and re-check the predicate, after the repair); a
 * Barrier whose lock was taken over from a dead party breaks
 * (CONC_EBROKEN, like Python's barrier when a party is lost). Value/Array
 * acquire returns the RLock's code. Semaphores, Events, Conditions and
 * Barriers have no owner: a process that dies holding a semaphore unit
 * or waiting in a condition/barrier loses that unit (a Semaphore cannot
 * know whose unit it was: left as Python's) / may absorb one notify /
 * breaks the barrier only on others' timeouts.
 *
 * Hostile peers (docs/security.md): every field above lives in memory
 * another process can write. Whatever it writes, a call never touches
 * memory outside the object (and, for a Condition, outside the mapping
 * that holds it), never spins without a bound and never calls code a
 * peer chose; it may block (as a peer holding the lock can make it do).
 */

/* Allocate size bytes (> 0) of zeroed memory shared with fork children
 * (mmap MAP_SHARED|MAP_ANONYMOUS). *out is page aligned. Returns 0,
 * CONC_EINVAL, CONC_ENOMEM. Free with conc_shared_free (in each process
 * that no longer needs it; NULL is ignored). */
CONC_API int conc_shared_alloc(size_t size, void **out);
CONC_API void conc_shared_free(void *p);

/* The lock words below hold the holder's id and its tag side by side, as
 * one aligned 64-bit unit. */
#ifdef __cplusplus
#define CONC__ALIGN8 alignas(8)
#else
#define CONC__ALIGN8 _Alignas(8)
#endif

/* ---- Lock (multiprocessing.Lock): not owned, any process may release. */
typedef struct conc_plock {
    CONC__ALIGN8 uint32_t word; /* holder pid, 0 when free (atomic; the futex word) */
    uint32_t tag;        /* which process had that pid (see Owner death) */
    uint32_t sleepers;   /* processes asleep on word (atomic) */
    uint32_t recoveries; /* takeovers from dead holders (atomic) */
} conc_plock_t;
#define CONC_PLOCK_INIT {0, 0, 0, 0}

/* Initialise an unlocked Lock in memory the processes share, or get a new
 * one in an anonymous shared mapping (_new; fork children inherit it; free
 * it with conc_shared_free). Returns 0, CONC_EINVAL (NULL), CONC_ENOMEM. */
CONC_API int conc_plock_init(conc_plock_t *l);
CONC_API int conc_plock_new(conc_plock_t **out);
/* Returns 0, CONC_EOWNERDEAD (acquired from a holder that died holding
 * it: the caller holds the lock and should repair what it protects),
 * CONC_ETIMEDOUT, CONC_EINVAL; CONC_EKILLED (a killed green thread).
 * Blocks per blocking/timeout (and Timeout scopes). */
CONC_API int conc_plock_acquire(conc_plock_t *l, bool blocking, double timeout);
/* Returns 0, or CONC_EPERM when not locked. Never blocks. */
CONC_API int conc_plock_release(conc_plock_t *l);
CONC_API bool conc_plock_locked(const conc_plock_t *l);
/* How many times a waiter took l over from a dead holder. */
CONC_API unsigned conc_plock_recoveries(const conc_plock_t *l);

/* ---- RLock (multiprocessing.RLock): owned by one thread of one process. */
typedef struct conc_prlock {
    CONC__ALIGN8 uint32_t word; /* owner thread id, 0 when free (atomic; the futex word) */
    uint32_t tag;        /* which thread had that id */
    uint32_t sleepers;
    uint32_t recoveries;
    uint32_t count;      /* recursion level, touched by the owner only */
    uint32_t reserved;
} conc_prlock_t;
#define CONC_PRLOCK_INIT {0, 0, 0, 0, 0, 0}

/* Initialise an unowned RLock, or get a new one (as conc_plock_init and
 * conc_plock_new). Returns 0, CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_prlock_init(conc_prlock_t *r);
CONC_API int conc_prlock_new(conc_prlock_t **out);
/* Returns 0, CONC_EOWNERDEAD (taken over from an owner thread that ended
 * holding it: the caller owns it at level 1 and should repair what it
 * protects), CONC_ETIMEDOUT, CONC_EINVAL, CONC_ERANGE (recursion
 * overflow). */
CONC_API int conc_prlock_acquire(conc_prlock_t *r, bool blocking, double timeout);
/* Returns 0, or CONC_EPERM when the calling thread does not own it. */
CONC_API int conc_prlock_release(conc_prlock_t *r);
CONC_API bool conc_prlock_is_owned(const conc_prlock_t *r);
CONC_API unsigned long conc_prlock_level(const conc_prlock_t *r);
CONC_API unsigned conc_prlock_recoveries(const conc_prlock_t *r);

/* ---- Semaphore / BoundedSemaphore */
typedef struct conc_psemaphore {
    uint32_t value;    /* atomic */
    uint32_t sleepers;
    uint32_t bound;    /* 0 unbounded, else initial value + 1 */
    uint32_t reserved;
} conc_psemaphore_t;
#define CONC_PSEMAPHORE_INIT(n) {(uint32_t)(n), 0, 0, 0}

/* value 0..CONC_SEMAPHORE_MAX (0x7fffffff); else CONC_EINVAL. */
CONC_API int conc_psemaphore_init(conc_psemaphore_t *s, long value);
CONC_API int conc_pbounded_semaphore_init(conc_psemaphore_t *s, long value);
CONC_API int conc_psemaphore_new(long value, bool bounded, conc_psemaphore_t **out);
/* Returns 0, CONC_ETIMEDOUT, CONC_EINVAL. A BoundedSemaphore of 1 is a
 * lock by another name for lock debugging (conc/deadlock.h): with
 * CONC_DEBUG=lockorder its acquisitions by this process are in the
 * lock-order graph, and with CONC_DEBUG=deadlock a wait that closes a
 * cycle returns CONC_EDEADLK. */
CONC_API int conc_psemaphore_acquire(conc_psemaphore_t *s, bool blocking, double timeout);
/* Add n >= 1 units. CONC_EINVAL for n < 1 or when a bounded semaphore
 * would pass its initial value (nothing released: ValueError); CONC_ERANGE
 * past 0x7fffffff. */
CONC_API int conc_psemaphore_release(conc_psemaphore_t *s, long n);
CONC_API long conc_psemaphore_value(const conc_psemaphore_t *s);

/* ---- Event */
typedef struct conc_pevent {
    uint32_t state;    /* generation << 1 | flag (atomic) */
    uint32_t sleepers;
} conc_pevent_t;
#define CONC_PEVENT_INIT {0, 0}

/* Initialise an Event whose flag is clear, or get a new one (as
 * conc_plock_init and conc_plock_new). Returns 0, CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_pevent_init(conc_pevent_t *e);
CONC_API int conc_pevent_new(conc_pevent_t **out);
/* Set the flag and wake all waiters; every process/thread already waiting
 * returns 0 even if clear() follows at once. */
CONC_API int conc_pevent_set(conc_pevent_t *e);
CONC_API int conc_pevent_clear(conc_pevent_t *e);
CONC_API bool conc_pevent_is_set(const conc_pevent_t *e);
/* Returns 0 (True), CONC_ETIMEDOUT (False), CONC_EINVAL. */
CONC_API int conc_pevent_wait(conc_pevent_t *e, double timeout);

/* ---- Condition (multiprocessing.Condition) over a process-shared Lock or
 * RLock. The lock is found by its offset from the condition, so it must
 * live in the same shared mapping (e.g. the same struct); with NULL the
 * condition uses its own embedded RLock (Condition()). */
typedef struct conc_pcond {
    uint32_t seq;      /* bumped by every notify (futex word) */
    uint32_t waiting;  /* waiters not yet notified (under the lock) */
    uint32_t tokens;   /* notified waiters that have not left yet (atomic) */
    int32_t kind;      /* 0 embedded RLock, 1 Lock, 2 RLock */
    int64_t offset;    /* lock address - condition address */
    conc_prlock_t own;
} conc_pcond_t;

/* Condition(lock) over a shared Lock (NULL: the embedded RLock),
 * Condition(rlock) over a shared RLock, or a new Condition with its
 * embedded RLock (_new, as conc_plock_new); acquire and release take and
 * drop that lock and return what the lock's own calls do, or CONC_EBROKEN
 * when the lock's recorded place is out of bounds (a peer wrote it).
 * Init returns 0, CONC_EINVAL (c NULL); _new also CONC_ENOMEM. */
CONC_API int conc_pcond_init(conc_pcond_t *c, conc_plock_t *lock);
CONC_API int conc_pcond_init_rlock(conc_pcond_t *c, conc_prlock_t *rlock);
CONC_API int conc_pcond_new(conc_pcond_t **out); /* embedded RLock */
CONC_API int conc_pcond_acquire(conc_pcond_t *c, bool blocking, double timeout);
CONC_API int conc_pcond_release(conc_pcond_t *c);
/* Release the lock (all levels), wait for a notify or the timeout, take
 * the lock back. Returns 0 when notified, CONC_ETIMEDOUT, CONC_EOWNERDEAD
 * (the lock was taken back from a holder that died holding it: held now;
 * whether a notify came is unknown — repair, then re-check the
 * predicate), CONC_EPERM (lock not held: for a Lock, not locked; for an
 * RLock, not owned), CONC_EINVAL, CONC_EBROKEN (the condition's shared
 * fields name no valid lock: a peer scribbled on it; every call). */
CONC_API int conc_pcond_wait(conc_pcond_t *c, double timeout);
/* Wait until pred(arg) (called with the lock held), one overall deadline.
 * Returns 0, CONC_ETIMEDOUT (pred still false), CONC_EOWNERDEAD (as for
 * wait; returned at once, before pred is called again), CONC_EPERM,
 * CONC_EINVAL, CONC_EBROKEN. */
CONC_API int conc_pcond_wait_for(conc_pcond_t *c, bool (*pred)(void *arg), void *arg,
                                 double timeout);
/* Wake at most n (>= 0) of the current waiters. Returns 0, CONC_EPERM,
 * CONC_EINVAL. */
CONC_API int conc_pcond_notify(conc_pcond_t *c, int n);
CONC_API int conc_pcond_notify_all(conc_pcond_t *c);

/* ---- Barrier. The action runs in the last arriving process; it is a
 * function pointer, valid only in the initialising process and its fork
 * children. A process where it would not be valid (a spawned one, or a
 * pointer a peer wrote: the initialiser stores a keyed MAC of the action
 * that only its fork relatives can check) gets CONC_ENOTSUP from wait and
 * the barrier breaks — a forged pointer is never called; use no action
 * and let the waiter with index 0 do the work instead. A party that dies
 * holding the barrier's lock breaks it (CONC_EBROKEN). */
typedef struct conc_pbarrier {
    conc_plock_t lock;
    conc_pcond_t cond;
    int32_t parties;
    int32_t count;
    int32_t state;     /* 0 filling, 1 draining, -1 resetting, -2 broken */
    int32_t reserved;
    double timeout;
    uint64_t layout;   /* address-space tag of the initialiser */
    void (*action)(void *arg);
    void *arg;
} conc_pbarrier_t;

/* Same as conc_barrier_init (timeout: the default for wait, CONC_FOREVER
 * for none, negative: already up). Returns 0 or CONC_EINVAL. */
CONC_API int conc_pbarrier_init(conc_pbarrier_t *b, int parties, void (*action)(void *),
                                void *arg, double timeout);
CONC_API int conc_pbarrier_new(int parties, void (*action)(void *), void *arg, double timeout,
                               conc_pbarrier_t **out);
/* timeout CONC_BARRIER_DEFAULT (conc/sync.h, -INFINITY) uses the barrier's.
 * Returns 0 (and *index 0..parties-1 if index != NULL), CONC_EBROKEN,
 * CONC_ENOTSUP (see above), CONC_EINVAL. */
CONC_API int conc_pbarrier_wait(conc_pbarrier_t *b, double timeout, int *index);
CONC_API int conc_pbarrier_reset(conc_pbarrier_t *b);
CONC_API int conc_pbarrier_abort(conc_pbarrier_t *b);
CONC_API bool conc_pbarrier_broken(conc_pbarrier_t *b);
CONC_API int conc_pbarrier_n_waiting(conc_pbarrier_t *b);
CONC_API int conc_pbarrier_parties(const conc_pbarrier_t *b);

/* =========================================================== Value / Array
 *
 * multiprocessing.Value / Array: n elements of elem_size bytes in a named
 * SharedMemory segment, with an optional process-shared RLock (Python's
 * default lock=True). Fork children inherit the mapping and simply use the
 * handle; spawned children get conc_array_name() through their argument
 * and call conc_array_attach(). The creating process owns the segment: it
 * is unlinked when the creator calls conc_array_free (or, if the creator
 * crashes, by the next sweep); unlink it earlier with conc_array_unlink
 * once every child has attached. A Value is an Array of one element.
 *
 * Ownership: heap handles, freed by conc_array_free (which unmaps; in the
 * creating process it also unlinks the name).
 */
typedef struct conc_array conc_array_t;
typedef conc_array_t conc_value_t;

/* Array(elem_size, n, lock). init (may be NULL: zeros) holds n elements.
 * Returns 0, CONC_EINVAL (elem_size or n 0, overflow, out NULL),
 * CONC_ENOMEM, CONC_ESYS. */
CONC_API int conc_array_new(size_t elem_size, size_t n, const void *init, bool lock,
                            conc_array_t **out);
/* Value(size, init, lock) = an Array of one element. */
CONC_API int conc_value_new(size_t size, const void *init, bool lock, conc_value_t **out);
/* Array(typecode, n, lock=<a Lock or RLock>) / Value(..., lock=l): the
 * elements guarded by the caller's process-shared lock — exactly one of
 * rlock and lock (conc_prlock_new / conc_plock_new, or one in other
 * conc_shared_alloc'd memory: it must be shared with every process that
 * uses the array, as a fork child inherits it). Several arrays may share
 * one lock. acquire/release take it; conc_array_get_lock returns rlock,
 * conc_array_get_plock returns lock. The caller keeps ownership and must
 * keep it alive while the array is used. A handle attached by name in
 * another process cannot reach it: it has no lock. (lock=False is
 * conc_array_new(..., false, ...).) Returns as conc_array_new;
 * CONC_EINVAL when both or neither lock is given. */
CONC_API int conc_array_new_with_lock(size_t elem_size, size_t n, const void *init, conc_prlock_t *rlock,
                                      conc_plock_t *lock, conc_array_t **out);
CONC_API int conc_value_new_with_lock(size_t size, const void *init, conc_prlock_t *rlock, conc_plock_t *lock,
                                      conc_value_t **out);
/* Attach by name (a spawned child). Returns 0, CONC_EINVAL (not a conc
 * array), CONC_ESYS (errno ENOENT). */
CONC_API int conc_array_attach(const char *name, conc_array_t **out);
/* The elements (get_obj(); Value.value is *(T *)conc_array_ptr(v)). */
CONC_API void *conc_array_ptr(const conc_array_t *a);
CONC_API size_t conc_array_len(const conc_array_t *a);
CONC_API size_t conc_array_elem_size(const conc_array_t *a);
/* get_lock(): the RLock (its own, or the caller's rlock), or NULL when
 * created with lock=false or with a caller's plain Lock. */
CONC_API conc_prlock_t *conc_array_get_lock(const conc_array_t *a);
/* get_lock() of an array made with a caller's plain Lock; NULL otherwise. */
CONC_API conc_plock_t *conc_array_get_plock(const conc_array_t *a);
/* acquire()/release() of that lock; CONC_EINVAL without one. acquire
 * returns CONC_EOWNERDEAD when it took the lock over from a holder that
 * died holding it: the caller holds it, and the elements may be
 * half-written (repair them, then release). The element count, size and
 * lock flag are copied into the handle when it is made (a peer that
 * rewrites the segment's header cannot change them). */
CONC_API int conc_array_acquire(conc_array_t *a, bool blocking, double timeout);
CONC_API int conc_array_release(conc_array_t *a);
/* The segment name to give a spawned child (owned by the handle). */
CONC_API const char *conc_array_name(const conc_array_t *a);
/* Remove the name now (mappings stay valid). Returns 0, CONC_EINVAL, CONC_ESYS. */
CONC_API int conc_array_unlink(conc_array_t *a);
/* Unmap and free; the creating process also unlinks the name. NULL ok. */
CONC_API int conc_array_free(conc_array_t *a);

#define conc_value_attach conc_array_attach
#define conc_value_ptr conc_array_ptr
#define conc_value_get_lock conc_array_get_lock
#define conc_value_acquire conc_array_acquire
#define conc_value_release conc_array_release
#define conc_value_name conc_array_name
#define conc_value_unlink conc_array_unlink
#define conc_value_free conc_array_free

#ifdef __cplusplus
}
#endif
#endif /* CONC_IPC_H */
