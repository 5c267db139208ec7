/*
 * context.c — conc_context_kind (conc/green.h): what the calling context
 * is, read from the thread-local current context without creating one (a
 * thread that never used conc is a plain OS thread). Interposers
 * (libconc_patch.so) call it on every intercepted libc call, so it is one
 * TLS load, two compares and a table look-up by the scheduling record's kind
 * (the hub's loop runs on a context of its own: green/internal.h), plus
 * the hub's count of live green threads for the main context (it stays
 * attached, idle, after the join of the last one).
 */
#include "green/internal.h"

int conc_context_kind(void)
{
    conc__ctx_t *ctx = conc__cur;
    if (!ctx || !ctx->green)
        return CONC_CTX_THREAD;
    /* the loop has a context of its own (green/internal.h) */
    static const int kinds[] = {[GS_MAIN] = CONC_CTX_MAIN, [GS_GREEN] = CONC_CTX_GREEN, [GS_LOOP] = CONC_CTX_HUB};
    conc__gs_t *gs = ctx->green;
    /* the main context stays attached after a join of the last green
     * thread (hub.c conc__hub_park_local): with none alive it is a plain
     * thread's */
    if (gs->kind == GS_MAIN && gs->hub->nalive == 0)
        return CONC_CTX_THREAD;
    return kinds[gs->kind];
}
