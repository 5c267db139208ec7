/*
 * stack_size.c — threading.stack_size(): one process-wide setting read by
 * conc_thread_new for threads whose options leave stack_size at 0.
 *
 * The value is validated once here (CPython's 32 KiB minimum, then a trial
 * pthread_attr_setstacksize) so that a thread start never fails on it.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "conc/thread.h"
#include "thread/internal.h"

#define CONC__STACK_SIZE_MIN ((size_t)32 * 1024) /* CPython's THREAD_STACK_MIN */

static _Atomic size_t stack_size_setting;

size_t conc__thread_default_stack(void)
{
    return atomic_load_explicit(&stack_size_setting, memory_order_relaxed);
}

int conc_stack_size(size_t size, size_t *old)
{
    if (size != 0) {
        if (size < CONC__STACK_SIZE_MIN)
            return CONC_EINVAL;
        pthread_attr_t attr;
        if (pthread_attr_init(&attr) != 0)
            return CONC_ENOMEM;
        int err = pthread_attr_setstacksize(&attr, size);
        pthread_attr_destroy(&attr);
        if (err)
            return CONC_EINVAL;
    }
    size_t prev = atomic_exchange_explicit(&stack_size_setting, size, memory_order_relaxed);
    if (old)
        *old = prev;
    return 0;
}

size_t conc_stack_size_get(void)
{
    return conc__thread_default_stack();
}
