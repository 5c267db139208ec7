/* observe/internal.h — what the dump, lock-order checker and deadlock
 * detector share (private). */
#ifndef CONC_OBSERVE_INTERNAL_H
#define CONC_OBSERVE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "conc/deadlock.h"
#include "core/observe.h"
#include "core/park.h"

#include "core/sanitize.h"

/* A deliberate racy read of a word another thread writes plainly (the
 * dump's snapshot of a hub's running context, a context's hub): any value
 * it reads is used only after a check, and TSan is told so. */
#ifdef CONC__TSAN
#define CONC__NO_TSAN __attribute__((no_sanitize_thread))
#else
#define CONC__NO_TSAN
#endif
static inline CONC__NO_TSAN void *conc__racy_ptr(void *const *p) { return *(void *const volatile *)p; }

/* CONC_DEBUG_* bits now on (debug.c). */
unsigned conc__debug_bits(void);
/* After a report: abort() if CONC_DEBUG_ABORT is on. */
void conc__debug_after_report(void);

/* The name given with conc_set_name, copied into buf; false if none. */
bool conc__name_of(const void *obj, char *buf, size_t n);
/* A context's name: a thread's name, a green thread's name, or
 * "thread <tid>" (reads only the context; caller holds conc__reg_lock
 * or is the context). */
const char *conc__ctx_name(const conc__ctx_t *c, char *buf, size_t n);
/* "Lock 0x55... \"name\"": what a wait of kind on obj is, in words
 * (without its holder). */
void conc__describe_obj(char *buf, size_t n, const void *obj, int kind);
/* A lock-like object's kind word ("Lock", "RLock", ...). */
const char *conc__kind_word(int kind);
/* The context that holds obj (the holder of a Lock, the owner of an
 * RLock, the thread or green thread a join waits for): true and a copy of
 * what the caller may need in *out (taken while the holder was pinned: the
 * holder may be gone the moment this returns), or false. Under
 * conc__reg_lock. */
bool conc__wait_holder(const void *obj, int kind, conc__ctx_snap_t *out);

/* Print n return addresses, one per line, with a prefix: "module(sym+off)
 * [addr]" found with dladdr. cache (or NULL) keeps what was found, for a
 * dump that prints the same frames thousands of times. */
typedef struct conc__symcache conc__symcache_t;
conc__symcache_t *conc__symcache_new(void);
void conc__symcache_free(conc__symcache_t *c);
void conc__print_frames_c(FILE *f, const char *prefix, void *const *frames, int n, conc__symcache_t *c);
void conc__print_frames(FILE *f, const char *prefix, void *const *frames, int n);

#endif
