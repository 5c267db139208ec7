/*
 * conc/trace.h — task states you can see: a live dump of every thread,
 * green thread and process with what it waits on; a trace of every state
 * transition viewable in Perfetto / chrome://tracing; wait and lock
 * contention profiles; counters.
 *
 * Everything here is off until asked for (a call or an environment
 * variable) and costs one predicted branch per hook while off; a library
 * configured with -DCONC_OBSERVE=OFF has no hooks at all.
 */
#ifndef CONC_TRACE_H
#define CONC_TRACE_H

#include <stdio.h>

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ dump
 * (registry of contexts, conc_dump, dump on a signal) */

/* ------------------------------------------------------------ trace,
 * profiles and counters */

#ifdef __cplusplus
}
#endif
#endif
