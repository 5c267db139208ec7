/*
 * scope_debug.c — a debug check for timeout scopes (conc/green.h) that
 * outlive the function that opened them.
 *
 * A scope belongs to the function F that called conc_timeout_begin and
 * must be ended before F returns; one left open by an early return cuts
 * some later, unrelated wait of the same context. When the check is on
 * (a build without NDEBUG, or CONC_DEBUG=1 in the environment), begin
 * notes two things found by unwinding the stack: the CFA of begin's frame
 * (F's stack pointer at the call: F's own frame lies above it, everything
 * F calls lies at or below it) and the function F. At every park of a
 * context with open scopes, the current stack is unwound: the first
 * frames whose CFA is above the noted one must include F (the same
 * invocation, since a new call of anything at that depth would have
 * overwritten it). If they do not, F has returned: the scope is reported
 * once on stderr. If the unwinder cannot get that far (the top of a green
 * thread's stack, code without unwind tables), nothing is reported: the
 * check never cries wolf on a scope it cannot judge.
 *
 * The unwinder is libgcc_s's, loaded with dlopen only when the check is
 * turned on: conc itself needs nothing but libc (where libgcc_s cannot be
 * loaded, a static executable for one, the check stays off).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unwind.h>

#include <pthread.h>

#include "core/park.h"

static _Atomic int enabled = -1; /* -1: not decided yet */

/* libgcc_s's unwinder, found at run time (see above). */
static struct {
    _Unwind_Reason_Code (*backtrace)(_Unwind_Trace_Fn, void *);
    _Unwind_Word (*get_cfa)(struct _Unwind_Context *);
    _Unwind_Ptr (*get_ip)(struct _Unwind_Context *);
    void *(*find_fn)(void *);
} uw;
static pthread_once_t uw_once = PTHREAD_ONCE_INIT;

static void uw_load(void)
{
    void *h = dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return;
    uw.get_cfa = (_Unwind_Word(*)(struct _Unwind_Context *))dlsym(h, "_Unwind_GetCFA");
    uw.get_ip = (_Unwind_Ptr(*)(struct _Unwind_Context *))dlsym(h, "_Unwind_GetIP");
    uw.find_fn = (void *(*)(void *))dlsym(h, "_Unwind_FindEnclosingFunction");
    void *bt = dlsym(h, "_Unwind_Backtrace");
    if (uw.get_cfa && uw.get_ip && uw.find_fn && bt)
        uw.backtrace = (_Unwind_Reason_Code(*)(_Unwind_Trace_Fn, void *))bt; /* last: the "loaded" flag */
}

bool conc__scope_debug_on(void)
{
    int e = atomic_load_explicit(&enabled, memory_order_relaxed);
    if (__builtin_expect(e >= 0, 1))
        return e;
#ifndef NDEBUG
    e = 1;
#else
    const char *v = getenv("CONC_DEBUG");
    e = v && *v && !(v[0] == '0' && v[1] == 0);
#endif
    if (e) {
        pthread_once(&uw_once, uw_load);
        e = uw.backtrace != NULL; /* no unwinder: nothing can be judged */
    }
    atomic_store_explicit(&enabled, e, memory_order_relaxed);
    return e;
}

/* ------------------------------------------------------ noting a begin */

typedef struct {
    int depth;
    uintptr_t cfa; /* begin's CFA */
    void *fn;      /* the function that called begin */
} note_walk_t;

static _Unwind_Reason_Code note_step(struct _Unwind_Context *uc, void *arg)
{
    note_walk_t *w = arg;
    /* 0: conc__scope_note, 1: conc_timeout_begin, 2: its caller */
    if (w->depth == 1) {
        w->cfa = (uintptr_t)uw.get_cfa(uc);
    } else if (w->depth == 2) {
        uintptr_t ip = (uintptr_t)uw.get_ip(uc);
        w->fn = ip ? uw.find_fn((void *)(ip - 1)) : NULL;
        return _URC_END_OF_STACK;
    }
    w->depth++;
    return _URC_NO_REASON;
}

__attribute__((noinline)) void conc__scope_note(conc__ctx_t *ctx, int i)
{
    note_walk_t w = {0, 0, NULL};
    uw.backtrace(note_step, &w);
    ctx->scope_cfa[i] = w.fn ? w.cfa : 0; /* 0: unknown, never checked */
    ctx->scope_fn[i] = w.fn;
    ctx->scope_reported &= (uint8_t)~(1u << i);
}

/* ------------------------------------------------------ checking a park */

typedef struct {
    uintptr_t cfa;
    void *fn;
    int above; /* frames seen with CFA above cfa */
    int found; /* 1: fn is among the first two of them */
} check_walk_t;

static _Unwind_Reason_Code check_step(struct _Unwind_Context *uc, void *arg)
{
    check_walk_t *w = arg;
    uintptr_t cfa = (uintptr_t)uw.get_cfa(uc);
    if (cfa <= w->cfa)
        return _URC_NO_REASON;
    uintptr_t ip = (uintptr_t)uw.get_ip(uc);
    if (ip && uw.find_fn((void *)(ip - 1)) == w->fn) {
        w->found = 1;
        return _URC_END_OF_STACK;
    }
    return ++w->above >= 2 ? _URC_END_OF_STACK : _URC_NO_REASON;
}

void conc__scope_check(conc__ctx_t *ctx)
{
    for (int i = 0; i < ctx->nscopes; i++) {
        if (!ctx->scope_cfa[i] || (ctx->scope_reported & (1u << i)))
            continue;
        check_walk_t w = {ctx->scope_cfa[i], ctx->scope_fn[i], 0, 0};
        uw.backtrace(check_step, &w);
        if (w.found || w.above == 0)
            continue; /* alive, or the unwinder could not tell */
        ctx->scope_reported |= (uint8_t)(1u << i);
        Dl_info di;
        const char *name = dladdr(ctx->scope_fn[i], &di) && di.dli_sname ? di.dli_sname : "?";
        fprintf(stderr,
                "conc: a timeout scope opened in %s (%p) is still open after that function returned "
                "(end every scope before its function returns: conc/green.h)\n",
                name, ctx->scope_fn[i]);
    }
}
