/*
 * timeout_obj.c — gevent.Timeout as an object: start, cancel, pending,
 * fired, a custom code, and gevent.with_timeout.
 *
 * It rides on the timeout scopes of core/park.c: start pushes a scope
 * tagged with a process-unique id (and the code a cut returns), cancel
 * finds that id in the context's scope array and takes the slot out
 * wherever it sits, so objects may be cancelled in any order — an outer
 * one while an inner one is open — and begin/end scopes keep working
 * around them (conc_timeout_end ends the innermost untagged scope). The
 * object itself is a plain value: it only remembers its id and the
 * context it was started on, never touches another context's array, and
 * an id that is no longer there (its context ended) reads as not pending.
 */
#include <stdatomic.h>
#include <string.h>

#include "conc/green.h"
#include "core/park.h"
#include "core/time.h"

static _Atomic uint32_t timeout_ids;

static uint32_t new_id(void)
{
    uint32_t id;
    do
        id = atomic_fetch_add_explicit(&timeout_ids, 1, memory_order_relaxed) + 1;
    while (id == 0);
    return id;
}

int conc_timeout_init(conc_timeout_t *t, double seconds, int code)
{
    int64_t dl;
    if (!t || conc__deadline(seconds, &dl) || code > 0)
        return CONC_EINVAL;
    memset(t, 0, sizeof *t);
    t->seconds = seconds;
    t->code = code;
    return 0;
}

/* Its slot in the caller's scopes, or -1 (not started here, cancelled, or
 * its context is gone). */
static int slot_of(const conc_timeout_t *t)
{
    if (!t->id || t->ctx != (void *)conc__cur)
        return -1;
    return conc__scope_find(conc__ctx(), t->id);
}

int conc_timeout_start(conc_timeout_t *t)
{
    if (!t)
        return CONC_EINVAL;
    int64_t dl;
    if (conc__deadline(t->seconds, &dl))
        return CONC_EINVAL;
    conc__ctx_t *ctx = conc__ctx();
    int i = slot_of(t);
    if (i >= 0 && !((ctx->fired >> i) & 1))
        return CONC_EPERM; /* pending: cancel it first (gevent's AssertionError) */
    if (i >= 0)
        conc__scope_remove(ctx, i); /* fired before: start over */
    uint32_t id = new_id();
    int rc = conc__scope_push(ctx, dl, id, t->code == CONC_ETIMEDOUT ? 0 : t->code);
    if (rc < 0)
        return rc;
    t->id = id;
    t->ctx = ctx;
    t->fired = false;
    return 0;
}

int conc_timeout_start_new(conc_timeout_t *t, double seconds, int code)
{
    int rc = conc_timeout_init(t, seconds, code);
    return rc ? rc : conc_timeout_start(t);
}

int conc_timeout_cancel(conc_timeout_t *t)
{
    if (!t)
        return CONC_EINVAL;
    if (!t->id)
        return 0;
    if (t->ctx != (void *)conc__cur)
        return CONC_EPERM;
    int i = conc__scope_find(conc__ctx(), t->id);
    if (i >= 0 && conc__scope_remove(conc__ctx(), i))
        t->fired = true;
    t->id = 0;
    return 0;
}

bool conc_timeout_pending(const conc_timeout_t *t)
{
    if (!t)
        return false;
    int i = slot_of(t);
    return i >= 0 && !((conc__ctx()->fired >> i) & 1);
}

bool conc_timeout_fired(const conc_timeout_t *t)
{
    if (!t)
        return false;
    int i = slot_of(t);
    if (i >= 0)
        return (conc__ctx()->fired >> i) & 1;
    return t->fired;
}

int conc_with_timeout(double seconds, void *(*fn)(void *), void *arg, void *timeout_value, void **result)
{
    if (!fn)
        return CONC_EINVAL;
    conc_timeout_t t;
    int rc = conc_timeout_start_new(&t, seconds, 0);
    if (rc)
        return rc;
    conc__ctx_t *ctx = conc__ctx();
    int before = ctx->fail_code;
    ctx->fail_code = 0;
    void *r = fn(arg);
    int failed = ctx->fail_code;
    if (!failed)
        ctx->fail_code = before;
    conc_timeout_cancel(&t);
    if (t.fired) {
        if (result)
            *result = timeout_value;
        return CONC_ETIMEDOUT;
    }
    if (failed)
        return CONC_EFAILED;
    if (result)
        *result = r;
    return 0;
}
