/* sel.h — the selector core and the interface every backend implements
 * (private; see selector.c for the design).
 *
 * A backend is a table of six functions. The core owns the keys (one per
 * fd, in a table indexed by fd) and calls the backend after checking the
 * arguments:
 *   add(s, k)        start watching k->pub.fd for k->pub.events (k is in
 *                    the table already); 0 or a CONC_E* code (then the core
 *                    drops k);
 *   mod(s, k, old)   k->pub.events changed from old; 0 or a code (the core
 *                    then unregisters k);
 *   del(s, k)        stop watching (never fails: the fd may be closed); k
 *                    is still in the table, and is freed by the core after;
 *   wait(s, ns, out, max)
 *                    wait at most ns nanoseconds (-1: forever, 0: poll)
 *                    and fill out; n >= 0, CONC__SEL_EINTR (a signal
 *                    interrupted the wait: the core retries with the time
 *                    left), or a CONC_E* code;
 *   waitfd(s)        an fd that polls readable whenever wait(0) could find
 *                    something (for parking a green thread); -1: the core
 *                    keeps a helper epoll fd mirroring the keys;
 *   fini(s)          release everything (keys are still in the table).
 */
#ifndef CONC_SELECTORS_SEL_H
#define CONC_SELECTORS_SEL_H

#include <stdint.h>

#include "conc/selectors.h"

#define CONC__SEL_EINTR (-1000)

typedef struct conc__sel_key {
    conc_selector_key_t pub; /* first: a public key pointer is a conc__sel_key_t * */
    uint32_t gen;            /* uring: generation of the armed poll */
    int32_t slot;            /* poll: index in the pollfd array; uring: armed state */
    int32_t cand;            /* signal: index in the candidate list, or -1 */
} conc__sel_key_t;

typedef struct conc__sel_ops conc__sel_ops_t;

struct conc_selector {
    const conc__sel_ops_t *ops;
    conc_selector_backend_t backend;
    conc__sel_key_t **keys; /* indexed by fd, NULL where not registered */
    int nkeys_cap;          /* length of keys */
    int count;              /* registered fds */
    int maxfd;              /* highest registered fd, -1 if none */
    int helper_ep;          /* helper epoll for green parking (select/poll), or -1 */
    void *be;               /* the backend's own state */
};

struct conc__sel_ops {
    const char *name;
    int (*init)(conc_selector_t *s, const conc_selector_opts_t *o);
    void (*fini)(conc_selector_t *s);
    int (*add)(conc_selector_t *s, conc__sel_key_t *k);
    int (*mod)(conc_selector_t *s, conc__sel_key_t *k, int old_events);
    void (*del)(conc_selector_t *s, conc__sel_key_t *k);
    int (*wait)(conc_selector_t *s, int64_t ns, conc_selector_ready_t *out, int max);
    int (*waitfd)(conc_selector_t *s);
};

extern const conc__sel_ops_t conc__sel_select_ops, conc__sel_poll_ops, conc__sel_epoll_ops,
    conc__sel_uring_ops, conc__sel_signal_ops;

static inline conc__sel_key_t *conc__sel_lookup(const conc_selector_t *s, int fd)
{
    return (fd >= 0 && fd < s->nkeys_cap) ? s->keys[fd] : (conc__sel_key_t *)0;
}

/* Python's _PollLikeSelector mapping: any bit but "in" makes it writable,
 * any bit but "out" readable (errors and hang-ups count as both); then the
 * key's own events mask it. in/out are the backend's bits for read/write. */
static inline int conc__sel_events(unsigned got, unsigned in, unsigned out, int want)
{
    int ev = 0;
    if (got & ~in)
        ev |= CONC_SEL_WRITE;
    if (got & ~out)
        ev |= CONC_SEL_READ;
    return ev & want;
}

/* Milliseconds for poll/epoll_wait from ns (-1 forever), rounded up so a
 * wait never ends before its time. */
static inline int conc__sel_ms(int64_t ns)
{
    if (ns < 0)
        return -1;
    int64_t ms = (ns + 999999) / 1000000;
    return ms > 1000000000 ? 1000000000 : (int)ms;
}

#endif
