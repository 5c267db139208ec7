/* conc.h — the whole library: Python's concurrency toolbox for C. */
#ifndef CONC_H
#define CONC_H
#include "conc/base.h"
#include "conc/sync.h"
#include "conc/thread.h"
#include "conc/queue.h"
#include "conc/futures.h"
#include "conc/process.h"
#include "conc/ipc.h"
#include "conc/ipc_queue.h"
#include "conc/green.h"
#include "conc/io.h"
#include "conc/pool.h"
#include "conc/manager.h"
#include "conc/manager_sync.h"
#include "conc/mpi.h" /* declarations only: link libconc_mpi to use them */
#include "conc/patch.h" /* declarations only: they live in libconc_patch.so */
#include "conc/trace.h"
#include "conc/selectors.h"
#include "conc/deadlock.h"
#include "conc/banker.h"
#include "conc/gil.h"
#endif
