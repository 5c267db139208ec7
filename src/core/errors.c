/* errors.c — names and descriptions of the CONC_E* codes. */
#include "conc/base.h"

struct conc__errinfo {
    int code;
    const char *name;
    const char *text;
};

static const struct conc__errinfo conc__errors[] = {
    {CONC_OK, "OK", "success"},
    {CONC_EINVAL, "ValueError", "ValueError: invalid argument or misuse"},
    {CONC_ETIMEDOUT, "TimeoutError", "TimeoutError: timed out"},
    {CONC_EPERM, "RuntimeError", "RuntimeError: operation not permitted in this state"},
    {CONC_ENOMEM, "MemoryError", "MemoryError: out of memory"},
    /* One code for every broken thing: the name stays neutral, the
     * failure's message says which (conc/base.h, "Outcomes"). */
    {CONC_EBROKEN, "BrokenError",
     "BrokenError: broken barrier, executor, pool or manager (BrokenBarrierError, BrokenExecutor, ...)"},
    {CONC_EEMPTY, "queue.Empty", "queue.Empty: the queue is empty"},
    {CONC_EFULL, "queue.Full", "queue.Full: the queue is full"},
    {CONC_ESHUTDOWN, "ShutDown", "ShutDown: shut down"},
    {CONC_ECANCELLED, "CancelledError", "CancelledError: cancelled"},
    {CONC_EKILLED, "GreenletExit", "GreenletExit: killed"},
    {CONC_EEOF, "EOFError", "EOFError: end of file, the peer closed"},
    {CONC_EFAILED, "Exception", "Exception: the task failed"},
    {CONC_ESYS, "OSError", "OSError: system call failed"},
    {CONC_EAGAIN, "BlockingIOError", "BlockingIOError: resource temporarily unavailable"},
    {CONC_EDEADLK, "DeadlockError", "DeadlockError: deadlock detected"},
    {CONC_ELOOPEXIT, "LoopExit", "LoopExit: nothing can ever wake this waiter"},
    {CONC_ENOTSUP, "NotImplementedError", "NotImplementedError: not supported"},
    {CONC_ERANGE, "OverflowError", "OverflowError: value out of range"},
    {CONC_EOWNERDEAD, "OwnerDeadError",
     "OwnerDeadError: acquired, but the previous holder died holding the lock (robust-mutex "
     "EOWNERDEAD); repair the data it protected"},
    {CONC_EKEY, "KeyError", "KeyError: no such key, or the key is already present"},
    {CONC_EATTR, "AttributeError", "AttributeError: no such attribute, or a method that is not exposed"},
};

static const struct conc__errinfo *conc__find(int code)
{
    for (size_t i = 0; i < sizeof conc__errors / sizeof conc__errors[0]; i++)
        if (conc__errors[i].code == code)
            return &conc__errors[i];
    return NULL;
}

const char *conc_strerror(int code)
{
    const struct conc__errinfo *e = conc__find(code);
    return e ? e->text : "unknown error";
}

const char *conc_errname(int code)
{
    const struct conc__errinfo *e = conc__find(code);
    return e ? e->name : "UnknownError";
}
