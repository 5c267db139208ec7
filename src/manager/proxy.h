/*
 * proxy.h — the proxies' call machinery (manager.c) for proxy types
 * defined in other files (manager_sync.c). A proxy is an opaque pointer
 * here. A call: w = conc__mp_begin(p, op) (NULL: return conc__mp_failed()),
 * append the arguments to w, then one of the finishing calls (they end the
 * call), or conc__mp_run + reading the reply + conc__mp_end.
 */
#ifndef CONC_MANAGER_PROXY_H
#define CONC_MANAGER_PROXY_H

#include <stdbool.h>
#include <stdint.h>

#include "manager/internal.h"

conc__wbuf_t *conc__mp_begin(void *p, uint8_t op);
int conc__mp_failed(void);
/* Send and wait up to wait for the reply: its code; results follow in *rep. */
int conc__mp_run(void *p, double wait, conc__rbuf_t *rep);
void conc__mp_end(void *p);
int conc__mp_void(void *p, double wait);
int conc__mp_u64(void *p, uint64_t *out);
int conc__mp_bool(void *p, bool *out);
/* The reply wait of a call that may block on the server for timeout. */
double conc__mp_wait(void *p, bool block, double timeout);
double conc__mp_timeout(const void *p);
/* A reply did not parse: the proxy is broken from now on. */
void conc__mps_broken(void *p);
/* Connect and bind with CONC__MOP_BIND_SYNC (manager/sync.h). */
int conc__mp_make_sync(conc_manager_t *m, uint8_t kind, int64_t param, double timeout,
                       const char *name, void **out);
int conc__mps_free(void *p);

#endif
