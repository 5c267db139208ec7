/* trace/internal.h — the trace module's records and buffers (private). */
#ifndef CONC_TRACE_INTERNAL_H
#define CONC_TRACE_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include "conc/trace.h"
#include "trace/obs.h"

/* One recorded transition as read back (a buffer stores it in 16 to 32
 * bytes, see rec() in trace.c); the meaning of a and b depends on type. */
typedef struct conc__tev {
    int64_t ts;     /* CLOCK_MONOTONIC ns */
    uint32_t type;  /* T_* */
    uint32_t track; /* the context it happened to (or that did it) */
    uint64_t a, b;
    uint32_t seq;   /* order of reading (ties in ts keep it) */
} conc__tev_t;

enum {
    T_INFO = 1,  /* a: kind (TK_*) | os tid << 8, b: group track (hub's thread) */
    T_NAME,      /* a, b: 16 bytes of name; T_NAME2: the next 16 */
    T_NAME2,
    T_SPAWN,     /* track: parent; a: the new track */
    T_SWITCH,    /* track: from; a: to */
    T_PARK,      /* a: obj, b: kind (enum conc__wait_kind) */
    T_WAKE,      /* track: waker; a: woken track */
    T_RESUME,    /* a: the park's result (0: woken) */
    T_END,
    T_TURN_B, T_TURN_E, T_IO_B, T_IO_E,
    T_SUBMIT, T_TSTART, T_TFINISH, T_TDONE, /* a: fn, b: arg */
    T_PSTART, T_PEXIT,             /* a: pid, b: exit code */
};

enum { TK_THREAD = 1, TK_GREEN = 2, TK_LOOP = 3 };


/* The derived timeline (write.c) and its renderers. */
typedef struct conc__slice {
    uint32_t track;
    uint8_t state;  /* S_* */
    int64_t ts, dur;
    uint64_t flow_in, flow_out; /* bind ids or 0 */
    uint64_t obj;
    uint32_t kind;  /* wait kind, or other info */
    uint32_t peer;  /* 1 + index of the waker's track (blocked, ready), the woken's (wake...); 0: none */
    int32_t rc;
    uint64_t a, b;  /* task: fn, arg; process: pid, code */
} conc__slice_t;

enum { S_RUNNING = 1, S_READY, S_BLOCKED, S_WAKE, S_SPAWN, S_SUBMIT, S_TASK, S_TURN, S_IOWAIT,
       S_PSTART, S_PEXIT, S_RESULT, S_END, S_OPEN /* flag: still in that state at stop */ = 0x80 };

typedef struct conc__track {
    uint32_t id;
    uint8_t kind;   /* TK_* (0: unknown) */
    int os_tid;
    uint32_t group;
    char name[33];
} conc__track_t;

typedef struct conc__timeline {
    conc__slice_t *s;
    size_t n, cap;
    conc__track_t *t;
    size_t nt, capt;
    int64_t t0, t1;
    uint64_t dropped;
    uint64_t events;
    uint32_t buffer_events;
} conc__timeline_t;

const char *conc__wait_kind_name(unsigned kind);
int conc__timeline_build(conc__timeline_t *tl, conc__tev_t *ev, size_t n);
void conc__timeline_free(conc__timeline_t *tl);
int conc__timeline_json(const conc__timeline_t *tl, FILE *f);
int conc__timeline_svg(const conc__timeline_t *tl, FILE *f);
void conc__timeline_ascii(const conc__timeline_t *tl, FILE *f, int width);

/* The calling thread's buffer, created on demand (NULL: no memory). */
conc__tbuf_t *conc__tbuf_self(void);

/* profile.c: a park of w by the calling context took wait_ns. */
void conc__profile_note(const conc__waiter_t *w, int64_t wait_ns, void *site);

#endif
