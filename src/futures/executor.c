/* executor.c — the Executor interface: submit, shutdown, free, map. */
#include <stdlib.h>

#include "futures/internal.h"
#include "trace/obs.h"

bool conc__executor_is_own_worker(conc_executor_t *ex);
bool conc__exit_done(void);
int conc__map_chunked(conc_executor_t *ex, void *(*fn)(void *), void *const *args, size_t n, void **results,
                      const conc_map_opts_t *o);

int conc_submit(conc_executor_t *ex, conc_future_t **out, void *(*fn)(void *), void *arg)
{
    if (!ex || !ex->ops || !out || !fn)
        return CONC_EINVAL;
    if (conc__exit_done())
        return CONC_ESHUTDOWN; /* after the exit step (Python: "cannot schedule new futures after interpreter shutdown") */
    if (conc__obs_on(CONC__OBS_TRACE))
        conc__trace_task(CONC__TASK_SUBMIT, fn, arg);
    return ex->ops->submit(ex, out, fn, arg);
}

int conc_executor_shutdown(conc_executor_t *ex, bool wait, bool cancel_futures)
{
    if (!ex || !ex->ops)
        return CONC_EINVAL;
    return ex->ops->shutdown(ex, wait, cancel_futures);
}

int conc_executor_free(conc_executor_t *ex)
{
    if (!ex || !ex->ops)
        return CONC_EINVAL;
    if (conc__executor_is_own_worker(ex))
        return CONC_EPERM;
    int rc = ex->ops->shutdown(ex, true, false);
    if (rc)
        return rc;
    ex->ops->destroy(ex);
    return 0;
}

int conc_map(conc_executor_t *ex, void *(*fn)(void *), void *const *args, size_t n, void **results,
             const conc_map_opts_t *opts)
{
    if (!ex || !ex->ops || !fn || (n && (!args || !results)))
        return CONC_EINVAL;
    conc_map_opts_t o = {0};
    if (opts)
        o = *opts;
    /* Zero means Python's default (no timeout) unless has_timeout says 0. */
    if (o.timeout == 0 && !o.has_timeout)
        o.timeout = CONC_FOREVER;
    int64_t deadline;
    if (conc__deadline(o.timeout, &deadline))
        return CONC_EINVAL;
    if (n == 0)
        return 0;
    if (o.chunksize > 1) /* map_iter.c */
        return conc__map_chunked(ex, fn, args, n, results, &o);
    conc_future_t **fs = malloc(n * sizeof *fs);
    if (!fs)
        return CONC_ENOMEM;
    size_t submitted = 0;
    int rc = 0;
    for (; submitted < n; submitted++) {
        rc = ex->ops->submit(ex, &fs[submitted], fn, args[submitted]);
        if (rc)
            break;
    }
    size_t i = 0;
    if (rc == 0) {
        /* Results in submission order; one deadline for all. */
        size_t reported = 0;
        for (; i < n; i++) {
            if (!o.progress) {
                rc = conc__future_wait_done(fs[i], deadline);
            } else {
                /* Report completions in any order: wait in short slices
                 * and count what is done (once per newly done item). */
                for (;;) {
                    int64_t slice = conc__now_ns() + 20 * 1000000LL;
                    rc = conc__future_wait_done(fs[i], slice < deadline ? slice : deadline);
                    size_t count = i + (rc == 0);
                    for (size_t k = i + 1; k < n; k++)
                        count += conc_future_done(fs[k]);
                    while (reported < count)
                        o.progress(++reported, n, o.progress_arg);
                    if (rc == 0 || (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline))
                        break;
                }
            }
            if (rc == 0)
                rc = conc_future_result(fs[i], 0, &results[i]); /* CONC_EFAILED: item i failed */
            if (rc)
                break;
        }
    }
    if (rc && o.failed_index)
        *o.failed_index = submitted < n ? submitted : i;
    if (rc == CONC_EFAILED && o.failed_future && i < submitted)
        *o.failed_future = conc_future_ref(fs[i]);
    /* A failure or a timeout cancels what has not started. */
    for (size_t k = 0; k < submitted; k++) {
        if (rc)
            conc_future_cancel(fs[k]);
        conc_future_free(fs[k]);
    }
    free(fs);
    return rc;
}
