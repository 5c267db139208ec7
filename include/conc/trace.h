/*
 * conc/trace.h — task states you can see: a live dump of every thread,
 * green thread and process with what it waits on; a trace of every state
 * transition viewable in Perfetto / chrome://tracing; wait and lock
 * contention profiles; counters.
 *
 * Everything here is off until asked for (a call or an environment
 * variable) and costs one predicted branch per hook while off; a library
 * configured with -DCONC_OBSERVE=OFF has no hooks at all.
 */
#ifndef CONC_TRACE_H
#define CONC_TRACE_H

#include <stdbool.h>
#include <stdio.h>

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ dump
 * (registry of contexts, conc_dump, dump on a signal)
 *
 * conc_dump writes, for every OS thread conc knows (threads it started,
 * threads that used conc, the main thread) and every green thread of each
 * thread's hub, one line — name, state (running / ready / blocked), what
 * it is blocked on and for how long — and a backtrace; then the child
 * processes still running:
 *
 *   Thread "Thread-3" (ident 0x7f.., tid 4122): blocked on Lock 0x55.. held by Thread-2 for 2.1 s
 *       #0 ./prog(worker+0x2a) [0x55...]
 *     green "Green-7": blocked on queue get on 0x55.. for 0.3 s
 *     green "Green-8": blocked on sleep until +0.4 s for 0.1 s
 *   Process "Process-1" pid 4121: running
 *
 * Blocked-on words: "Lock 0x..", "RLock 0x.. held by X", "Condition 0x..",
 * "Semaphore 0x..", "Event 0x..", "Barrier 0x..", "queue get / put / join
 * on 0x..", "result of a task of pool 0x.. (future 0x..)", "join of thread
 * X", "join of green thread X", "join of process 4121", "sleep until
 * +0.4 s", "fd 7 readable / writable", "shared word 0x.." (a
 * process-shared object). A Lock's holder is known when it was taken
 * after a wait or with lock debugging on (conc/deadlock.h), else "?".
 * Names given with conc_set_name (conc/deadlock.h) are shown in quotes.
 *
 * OS threads' backtraces come from a signal sent to each (SIGRTMIN+6, a
 * handler that calls backtrace(3)); a thread that blocks it is listed
 * without one; under ThreadSanitizer the signal step is skipped. Green
 * threads that are not running are walked from their saved context by
 * frame pointers (code built without them gives a short backtrace).
 * Symbols need -rdynamic in the program for its own functions. The dump
 * reads other threads' state while they run: a snapshot, not a stop.
 */

/* Dump to f (see above). Returns 0, or CONC_EINVAL for NULL. Blocks for
 * at most ~0.2 s waiting for backtraces; safe to call from any thread but
 * not from a signal handler (use conc_dump_on_signal). */
CONC_API int conc_dump(FILE *f);
/* From now on, signal signo dumps to stderr (Go's SIGQUIT dump): the
 * handler wakes a dedicated thread, which dumps. CONC_DUMP_SIGNAL=QUIT
 * (a name without SIG, or a number) in the environment does the same at
 * load time. Returns 0, CONC_EINVAL (a bad or reserved signal: SIGKILL,
 * SIGSTOP, SIGRTMIN+6) or CONC_ESYS. */
CONC_API int conc_dump_on_signal(int signo);

/* ------------------------------------------------------------ trace,
 * profiles and counters */

/* Trace: every state transition of every OS thread and green thread
 * (created, ready, running, blocked on X, woken by Y, ended), task submit /
 * start / finish in the pools, process start / exit, hub turns and their
 * I/O waits — written at conc_trace_stop as Chrome trace-event JSON, which
 * Perfetto (ui.perfetto.dev) and chrome://tracing open: one track per OS
 * thread and per green thread, arrows from waker to woken. See
 * docs/trace.md.
 *
 * Each OS thread records into its own buffer (no lock; a traced thread
 * never waits for the writer); a full buffer drops what comes next and
 * counts it: the file's "otherData" says "dropped_events". CONC_TRACE=path
 * in the environment starts a trace at load and writes it at exit. */
typedef struct conc_trace_opts {
    /* Size of each OS thread's buffer, in 16-byte units: a switch, a park,
     * a wake take one (a park two, a task start two). 0: $CONC_TRACE_BUFFER
     * or 65536 (1 MiB). At most 2^26. */
    size_t buffer_events;
    /* Also draw the timeline as an SVG picture at stop (NULL: no). */
    const char *svg_path;
    /* Also print an ASCII timeline to this stream at stop (NULL: no). */
    FILE *ascii;
    int ascii_width; /* columns of the ASCII timeline; 0: 72 */
} conc_trace_opts_t;

/* Start tracing into the file at path (created or truncated now, written
 * at stop). 0; CONC_EINVAL (NULL or empty path, bad opts), CONC_EPERM (a
 * trace is already running), CONC_ESYS (cannot create the file, see
 * errno), CONC_ENOTSUP (the library was built with CONC_OBSERVE=OFF).
 * opts may be NULL. Never blocks. */
CONC_API int conc_trace_start(const char *path);
CONC_API int conc_trace_start_opts(const char *path, const conc_trace_opts_t *opts);
/* Stop tracing and write the file (and the picture). Blocks the caller
 * while it writes; traced threads go on untouched. 0; CONC_EPERM (no trace
 * running), CONC_ENOMEM, CONC_ESYS (a write failed). A process that exits
 * with a trace running writes it from an atexit handler. A forked child
 * does not trace (its parent's trace goes on). */
CONC_API int conc_trace_stop(void);
/* True while a trace runs. */
CONC_API bool conc_trace_active(void);

/* Wait profiles (Go's mutex / block profiles, mutrace): for each object a
 * context parked on (Lock, RLock, Condition, Semaphore, Event, Queue,
 * Future...): how many waits (contended acquires), total and longest wait,
 * and the call site that waited longest. Opt-in: conc_profile_start() or
 * CONC_PROFILE=1 in the environment (prints the top 20 to stderr at exit).
 * Only waits that park are seen: an uncontended acquire costs nothing. */
typedef struct conc_profile_entry {
    const void *obj;     /* the object; when !known, the call site stands for it */
    const char *kind;    /* "Lock", "queue get", "Future"... (static string) */
    int known;           /* the primitive said what it waits on */
    unsigned long long contended;  /* waits that parked */
    unsigned long long total_ns, max_ns;
    void *site;          /* return address in the caller that waited most */
    unsigned long long site_ns;    /* that site's total wait */
} conc_profile_entry_t;

/* 0; CONC_ENOMEM; CONC_ENOTSUP (built with CONC_OBSERVE=OFF). */
CONC_API int conc_profile_start(void);
/* 0; CONC_EPERM when not profiling. What was gathered stays readable. */
CONC_API int conc_profile_stop(void);
/* Forget what was gathered. */
CONC_API void conc_profile_reset(void);
/* The n entries with the longest total wait into out, longest first; the
 * number written, or CONC_EINVAL (out NULL, n < 0), CONC_ENOMEM. */
CONC_API int conc_profile_top(conc_profile_entry_t *out, int n);
/* Print the top_n (0: 20) as a table. 0, CONC_EINVAL, CONC_ESYS. */
CONC_API int conc_profile_print(FILE *f, int top_n);

/* Counters, summed over all threads (ended ones included). They count
 * only while enabled (conc_stats_enable(true) or CONC_STATS=1): each is a
 * per-thread add, summed on read. */
typedef struct conc_stats {
    unsigned long long parks;          /* waits that parked a context */
    unsigned long long spins_won;      /* waits that a bounded spin ended */
    unsigned long long futex_sleeps;   /* OS-thread parks that slept in the kernel */
    unsigned long long green_switches; /* hub context switches */
    unsigned long long steals;         /* thread-pool tasks taken from another worker's deque */
    unsigned long long timer_fires;    /* green timers that fired */
} conc_stats_t;

/* Turn the counters on or off; returns whether they were on. */
CONC_API bool conc_stats_enable(bool on);
/* Read the sums; 0 or CONC_EINVAL (NULL). */
CONC_API int conc_stats(conc_stats_t *out);
/* Set every counter to 0. */
CONC_API void conc_stats_reset(void);

#ifdef __cplusplus
}
#endif
#endif
