/* fail.c — conc_fail(): a task's failure recorded on its context. */
#include <stdarg.h>
#include <stdio.h>

#include "conc/base.h"
#include "core/park.h"

void *conc_fail(int code, const char *fmt, ...)
{
    conc__ctx_t *c = conc__ctx();
    c->fail_code = code < 0 ? code : CONC_EFAILED;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->fail_msg, sizeof c->fail_msg, fmt, ap);
        va_end(ap);
    } else {
        c->fail_msg[0] = 0;
    }
    return NULL;
}

int conc_failure(const char **msg)
{
    conc__ctx_t *c = conc__ctx();
    if (msg)
        *msg = c->fail_code ? c->fail_msg : "";
    return c->fail_code;
}

void conc_fail_clear(void)
{
    conc__ctx_t *c = conc__ctx();
    c->fail_code = 0;
    c->fail_msg[0] = 0;
}
