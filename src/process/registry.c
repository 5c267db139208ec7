/*
 * registry.c — functions that may run in another process, by name.
 *
 * CONC_REGISTER(fn) puts a static conc_registration_t on a lock-free list
 * from a constructor, so every copy of the program (a spawned child, the
 * fork server) has the same entries before main runs. Entries are never
 * removed; lookups walk the list (it is short, and a child looks up once).
 */
#include <stdatomic.h>
#include <string.h>

#include "process/internal.h"

static _Atomic(conc_registration_t *) head;

int conc_register(conc_registration_t *r)
{
    if (!r || !r->name || !r->fn)
        return CONC_EINVAL;
    /* Pushed at the head; lookups keep the oldest match, so the first
     * registration of a name wins. */
    conc_registration_t *h = atomic_load_explicit(&head, memory_order_acquire);
    do
        r->next = h;
    while (!atomic_compare_exchange_weak_explicit(&head, &h, r, memory_order_acq_rel,
                                                  memory_order_acquire));
    return 0;
}

const conc_registration_t *conc_registry_find(const char *name)
{
    if (!name)
        return NULL;
    const conc_registration_t *found = NULL;
    /* The list is newest first: keep the last match, the oldest entry. */
    for (const conc_registration_t *r = atomic_load_explicit(&head, memory_order_acquire); r; r = r->next)
        if (strcmp(r->name, name) == 0)
            found = r;
    return found;
}

const conc_registration_t *conc_registry_find_fn(void (*fn)(void))
{
    if (!fn)
        return NULL;
    const conc_registration_t *found = NULL;
    for (const conc_registration_t *r = atomic_load_explicit(&head, memory_order_acquire); r; r = r->next)
        if (r->fn == fn)
            found = r;
    return found;
}
