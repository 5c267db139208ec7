/* observe.c — the global switch word of observe.h. */
#include "core/observe.h"

#ifndef CONC_NO_OBSERVE
uint32_t conc__obs_flags;
#endif
