/* tests/hub/uring_probe.c — exit 0 when this process could run a hub on
 * io_uring, else print why not and exit 77 (CTest's "skipped"): the
 * uring reruns of the green and io suites use it (top CMakeLists.txt). */
#include <stdio.h>

#include "io/poller.h"

int main(void)
{
    if (conc__uring_available())
        return 0;
    fprintf(stderr, "io_uring is not available here (kernel.io_uring_disabled, a seccomp filter or an old "
                    "kernel): the uring run is skipped\n");
    return 77;
}
