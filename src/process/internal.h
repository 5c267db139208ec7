/*
 * internal.h — the child-start machinery of the process module (private).
 *
 * Process pools (and anything else that runs registered functions in other
 * processes) use this instead of conc_process_t when they need less
 * bookkeeping or extra file descriptors in the child:
 *
 *     conc__child_t c;
 *     conc__launch_t l = { .fn = entry, .arg = buf, .len = n,
 *                          .method = CONC_FORKSERVER, .fds = fds, .nfds = 2 };
 *     conc__child_start(&c, &l);        // c.pid, c.pidfd are set
 *     ...                               // in the child: conc__child_fds()
 *     conc__child_wait(&c, deadline);   // c.exitcode is set
 *     conc__child_release(&c);
 *
 * The child runs entry->fn (a CONC_SIG_PROCESS entry; for fork any function
 * of that shape, entry may then be NULL and fork_fn set) and exits with its
 * return value, or 1 after conc_fail. A conc__child_t is not registered
 * with active_children or the exit sequence: its owner must wait for it
 * (or kill it) itself.
 */
#ifndef CONC_PROCESS_INTERNAL_H
#define CONC_PROCESS_INTERNAL_H

#include <stdint.h>
#include <sys/types.h>

#include "conc/process.h"
#include "conc/sync.h"

#define CONC__MAX_FDS 64

typedef struct conc__launch {
    const conc_registration_t *entry; /* needed for spawn/forkserver */
    conc_process_fn fork_fn;          /* fork only: used when entry is NULL */
    const void *arg;
    size_t len;
    conc_start_method_t method;       /* DEFAULT is resolved by start */
    const char *name;                 /* the child's current_process name */
    const char *ident;                /* its identity ("1:2"), may be NULL */
    bool daemon;                      /* the child's own daemon flag */
    const int *fds;                   /* passed to the child, in order */
    int nfds;                         /* <= CONC__MAX_FDS */
    const unsigned char *authkey;     /* the child's Process.authkey */
    size_t authkey_len;               /* <= CONC__AUTHKEY_MAX */
} conc__launch_t;

#define CONC__AUTHKEY_MAX 256

typedef struct conc__child {
    pid_t pid;
    int pidfd;                /* readable when the child ended; -1 once closed */
    int statusfd;             /* forkserver: where the server writes the status */
    conc_start_method_t method;
    int done;                 /* atomic: reaped, exitcode valid */
    int exitcode;
    conc_lock_t mu;           /* serialises reaping */
} conc__child_t;

/* Start a child. Returns 0, CONC_EINVAL (not registered for spawn/forkserver,
 * too many fds), CONC_EPERM (unguarded spawned child), CONC_ENOMEM,
 * CONC_ESYS. The fork child never returns from this call. */
int conc__child_start(conc__child_t *c, const conc__launch_t *l);
/* Wait until the child ended and reap it (deadline: core/time.h).
 * Returns 0 (c->exitcode set) or CONC_ETIMEDOUT. */
int conc__child_wait(conc__child_t *c, int64_t deadline);
/* Non-blocking: true when the child has ended (and is now reaped). */
bool conc__child_poll(conc__child_t *c);
/* pidfd_send_signal; 0 (also when already reaped) or CONC_ESYS. */
int conc__child_signal(conc__child_t *c, int sig);
/* Close the fds (the child must have been reaped, or is abandoned). */
void conc__child_release(conc__child_t *c);

/* In a child: the fds passed through conc__launch_t.fds, in order (their
 * numbers in this process). Returns how many, *fds valid for the process. */
int conc__child_fds(const int **fds);

/* The resolved start method for a start now (DEFAULT -> fork/forkserver). */
conc_start_method_t conc__resolve_method(conc_start_method_t m);

/* ---- between the files of this module ---- */

/* What a child is told about itself and its parent (wire and fork). */
typedef struct conc__child_info {
    const char *name;
    const char *ident;
    bool daemon;
    const char *parent_name;
    pid_t parent_pid;
    int parent_pidfd;         /* -1 if unknown */
    const int *fds;
    int nfds;
    bool forked;              /* strings stay valid: the parent's copy */
    conc_start_method_t method; /* how this child was started */
    const unsigned char *authkey; /* its authkey (NULL: keep this process's) */
    size_t authkey_len;
} conc__child_info_t;

/* process.c: become the child described by info (current/parent records,
 * counters, children list emptied). */
void conc__become_child(const conc__child_info_t *info);
/* process.c: run fn in this (child) process and return the exit status. */
int conc__run_child_fn(conc_process_fn fn, const void *arg, size_t len);
/* process.c: what a forked child does after fn: children joined, non-daemon
 * threads joined, stdio flushed, _exit(code). */
_Noreturn void conc__child_exit(int code);
/* process.c: register the exit hook (children joined, daemons terminated,
 * fork server stopped) with the thread module's exit sequence, once. */
void conc__process_exit_hook_once(void);
/* process.c: flush stdout/stderr if they hold buffered output. */
void conc__flush_std(void);
/* process.c: this process's identity string and name (for children). */
const char *conc__self_name(void);
/* process.c: a pidfd for this process (lazily opened, cached), or -1. */
int conc__self_pidfd(void);
/* process.c: true when this is a spawned child that has not run the guard. */
bool conc__unguarded(void);

/* Wire format of a start request (spawn bootstrap and forkserver). */
#define CONC__REQ_MAGIC 0x636f6e63u /* "conc" */
typedef struct conc__req_hdr {
    uint32_t magic;
    uint32_t kind;            /* CONC__REQ_* */
    uint32_t fn_len, name_len, ident_len, parent_name_len;
    uint64_t arg_len;
    int32_t parent_pid;
    uint32_t nfds;            /* fds after the fixed ones in SCM_RIGHTS */
    uint8_t daemon;
    uint8_t pad[5];
    uint16_t authkey_len;     /* <= CONC__AUTHKEY_MAX */
    uint8_t authkey[CONC__AUTHKEY_MAX];
} conc__req_hdr_t;
enum { CONC__REQ_PROCESS = 1, CONC__REQ_SERVER = 2 };

/* A decoded request (strings NUL-terminated, one malloc'd block). */
typedef struct conc__req {
    conc__req_hdr_t h;
    char *fn, *name, *ident, *parent_name;
    void *arg;
    void *block;
    int fds[CONC__MAX_FDS + 3];
    int nrecv;                /* fds received */
} conc__req_t;

/* wire.c: send a request on sock with SCM_RIGHTS [fixed..., l->fds...]. */
int conc__req_send(int sock, uint32_t kind, const conc__launch_t *l, const char *fn_name,
                   const int *fixed, int nfixed);
/* wire.c: receive one request (blocking). 0, CONC_EEOF, CONC_ENOMEM, CONC_ESYS. */
int conc__req_recv(int sock, conc__req_t *r);
void conc__req_free(conc__req_t *r);
/* wire.c: full write/read with EINTR handling (MSG_NOSIGNAL). 0 or CONC_ESYS/CONC_EEOF. */
int conc__write_all(int fd, const void *buf, size_t n);
int conc__read_all(int fd, void *buf, size_t n);
/* wire.c: send/receive n bytes carrying fds. */
int conc__send_fds(int sock, const void *buf, size_t n, const int *fds, int nfds);
int conc__recv_fds(int sock, void *buf, size_t n, int *fds, int maxfds, int *nfds);

/* spawn.c */
int conc__spawn_start(conc__child_t *c, const conc__launch_t *l);
/* spawn.c: posix_spawn this program with a bootstrap socket; returns the
 * parent's end in *sock and the pid. */
int conc__spawn_program(pid_t *pid, int *sock, char mode);

/* forkserver.c */
int conc__forkserver_start(conc__child_t *c, const conc__launch_t *l);
_Noreturn void conc__forkserver_main(int boot);
/* forkserver.c: a fork-server child was reaped or abandoned. */
void conc__forkserver_child_done(void);
/* forkserver.c: stop the server (exit sequence) unless some of its
 * children are still unreaped; true if it stopped one. */
bool conc__forkserver_stop(void);
void conc__forkserver_atfork_prepare(void);
void conc__forkserver_atfork_parent(void);
void conc__forkserver_atfork_child(void);

/* symname.c: a name for fn ("work", or "the function at 0x...": then
 * false, no symbol names it). */
bool conc__fn_name(void (*fn)(void), char *out, size_t cap);
/* symname.c: the function whose code holds addr, from the ELF symbol
 * table of its file (static and hidden functions too); *at: addr's offset
 * in it. false: not known (a stripped file). */
bool conc__code_name(const void *addr, char *out, size_t cap, uintptr_t *at);
/* symname.c: fn's registration; when it has none, fail (conc_fail with
 * CONC_EINVAL and a message naming fn and the fix, CONC_REGISTER, also
 * written once to stderr) and return NULL. where: why a name is needed
 * ("a process pool's workers find their tasks by name"); macro: the fix
 * ("CONC_REGISTER", "CONC_POOL_REGISTER"). */
const conc_registration_t *conc__require_registered(void (*fn)(void), const char *where,
                                                    const char *macro);

/* Linux syscalls (glibc 2.36 has wrappers, older ones do not). */
int conc__pidfd_open(pid_t pid);
int conc__pidfd_send_signal(int pidfd, int sig);

#endif
