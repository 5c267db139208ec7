/*
 * poller.c — which backend a hub gets (io/poller.h).
 *
 * An explicit request (conc_hub_init with a backend) gets that backend or
 * nothing. CONC_HUB_DEFAULT means: CONC_HUB_BACKEND from the environment
 * (read once per process), and failing that the built-in default below.
 * A request from the environment that this kernel cannot meet (uring
 * where io_uring is disabled) falls back to the default quietly — a
 * deployment knob must not break a program — with a one-line note on
 * stderr under CONC_DEBUG.
 *
 * The built-in default is epoll, even where io_uring works: measured on
 * the green echo benchmark, io_uring was not faster here (docs/green.md,
 * "Hub backends", has the numbers and the reasons).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/poller.h"

#define DEFAULT_BACKEND CONC_HUB_EPOLL

static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static conc_hub_backend_t env_backend;

static bool debug_on(void)
{
    const char *d = getenv("CONC_DEBUG");
    return d && *d && strcmp(d, "0") != 0;
}

static void read_env(void)
{
    const char *s = getenv("CONC_HUB_BACKEND");
    if (!s || !*s)
        return;
    static const struct {
        const char *name;
        conc_hub_backend_t b;
    } names[] = {{"epoll", CONC_HUB_EPOLL},   {"uring", CONC_HUB_URING},   {"io_uring", CONC_HUB_URING},
                 {"poll", CONC_HUB_POLL},     {"select", CONC_HUB_SELECT}, {"default", CONC_HUB_DEFAULT}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i].name) == 0) {
            env_backend = names[i].b;
            return;
        }
    }
    if (debug_on())
        fprintf(stderr, "conc: CONC_HUB_BACKEND=%s is not epoll|uring|poll|select: ignored\n", s);
}

static const conc__poller_ops_t *ops_of(conc_hub_backend_t b)
{
    switch (b) {
    case CONC_HUB_EPOLL:
        return &conc__poll_epoll;
    case CONC_HUB_URING:
        return conc__uring_available() ? &conc__poll_uring : NULL;
    case CONC_HUB_POLL:
        return &conc__poll_poll;
    case CONC_HUB_SELECT:
        return &conc__poll_select;
    default:
        return NULL;
    }
}

const conc__poller_ops_t *conc__poller_choose(conc_hub_backend_t b)
{
    if (b != CONC_HUB_DEFAULT)
        return ops_of(b);
    pthread_once(&env_once, read_env);
    if (env_backend != CONC_HUB_DEFAULT) {
        const conc__poller_ops_t *o = ops_of(env_backend);
        if (o)
            return o;
        /* conc__uring_available already said why under CONC_DEBUG */
    }
    const conc__poller_ops_t *o = ops_of(DEFAULT_BACKEND);
    return o ? o : &conc__poll_epoll;
}
