/* fence.c — see fence.h. */
#include "core/fence.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

int conc__membarrier_state;
#ifdef CONC__TSAN
atomic_uint conc__fence_word;
#endif
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void probe(void)
{
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    int ok = cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
             syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    __atomic_store_n(&conc__membarrier_state, ok ? 1 : -1, __ATOMIC_SEQ_CST);
}

bool conc__membarrier_init(void)
{
    pthread_once(&once, probe);
    return conc__membarrier_state == 1;
}

void conc__fence_heavy(void)
{
    if (conc__membarrier_state == 1) {
        conc__fence_full();
        if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
            return;
    }
    conc__fence_full();
}
