/*
 * dns.c — getaddrinfo and getnameinfo in libconc_patch.so (design:
 * patch.c). A name lookup may block for seconds inside the resolver
 * (files, DNS over UDP with retries, NSS modules), with no fd we could
 * wait on; on a green thread it is run on conc's thread pool
 * (conc_green_offload, gevent's threadpool resolver) and only the green
 * thread waits. Lookups that need no resolver (numeric hosts and ports)
 * are done in place.
 *
 * A kill or timeout scope ends the wait with EAI_SYSTEM and errno set to
 * the cut errno; the lookup goes on in the pool, and whoever finishes
 * last — the worker or the green thread — frees the job (and a result
 * nobody will read).
 */
#include "patch/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

enum { RUNNING = 0, DONE = 1, ABANDONED = 2 };

struct job {
    _Atomic int state;
    bool info; /* getnameinfo */
    int rc, err;
    /* getaddrinfo */
    char *node, *service;
    struct addrinfo hints;
    bool has_hints;
    struct addrinfo *res;
    /* getnameinfo */
    struct sockaddr_storage sa;
    socklen_t salen;
    char *host, *serv;
    socklen_t hostlen, servlen;
    int flags;
};

static void job_free(struct job *j)
{
    if (!j->info && j->res)
        freeaddrinfo(j->res);
    free(j->node);
    free(j->service);
    free(j->host);
    free(j->serv);
    free(j);
}

static void *run(void *arg)
{
    struct job *j = arg;
    if (j->info)
        j->rc = getnameinfo((struct sockaddr *)&j->sa, j->salen, j->host, j->hostlen, j->serv, j->servlen,
                            j->flags);
    else
        j->rc = getaddrinfo(j->node, j->service, j->has_hints ? &j->hints : NULL, &j->res);
    j->err = errno;
    int expect = RUNNING;
    if (!atomic_compare_exchange_strong(&j->state, &expect, DONE))
        job_free(j); /* the green thread gave up on it */
    return NULL;
}

/* Run j on the pool; 0 when it finished (j is ours again), else the job
 * belongs to the worker now and the cut errno is set. */
static int offload(struct job *j)
{
    void *unused;
    int rc = conc_green_offload(run, j, &unused);
    if (rc == 0 || rc == CONC_EFAILED)
        return 0;
    if (rc != CONC_EKILLED && rc != CONC_ETIMEDOUT) {
        /* not submitted (CONC_ESHUTDOWN after the exit step...): the
         * lookup runs here, blocking the OS thread as without the patch */
        run(j);
        return 0;
    }
    int expect = RUNNING;
    if (atomic_compare_exchange_strong(&j->state, &expect, ABANDONED)) {
        errno = conc__patch_cut_errno();
        return -1;
    }
    return 0; /* finished just as we were cut: take the answer */
}

static bool numeric(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static bool numeric_port(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static char *dup_or_null(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *ok = false;
    return d;
}

PATCH_EXPORT int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                             struct addrinfo **res)
{
    if (!PATCH_GREEN() || !res || (!node && !service) ||
        ((!node || numeric(node) || (hints && (hints->ai_flags & AI_NUMERICHOST))) &&
         (!service || numeric_port(service) || (hints && (hints->ai_flags & AI_NUMERICSERV)))))
        return REAL(getaddrinfo)(node, service, hints, res);
    struct job *j = calloc(1, sizeof *j);
    bool ok = j != NULL;
    if (ok) {
        j->node = dup_or_null(node, &ok);
        j->service = dup_or_null(service, &ok);
        if (hints) {
            j->has_hints = true;
            j->hints.ai_flags = hints->ai_flags;
            j->hints.ai_family = hints->ai_family;
            j->hints.ai_socktype = hints->ai_socktype;
            j->hints.ai_protocol = hints->ai_protocol;
        }
    }
    if (!ok) {
        if (j)
            job_free(j);
        return EAI_MEMORY;
    }
    if (offload(j) != 0)
        return EAI_SYSTEM;
    int rc = j->rc;
    *res = j->res;
    j->res = NULL;
    if (rc == EAI_SYSTEM)
        errno = j->err;
    job_free(j);
    return rc;
}

PATCH_EXPORT int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen, char *serv,
                             socklen_t servlen, int flags)
{
    bool no_host = (flags & NI_NUMERICHOST) || !host || !hostlen;
    bool no_serv = (flags & NI_NUMERICSERV) || !serv || !servlen;
    if (!PATCH_GREEN() || !sa || salen > sizeof(struct sockaddr_storage) || (no_host && no_serv))
        return REAL(getnameinfo)(sa, salen, host, hostlen, serv, servlen, flags);
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return EAI_MEMORY;
    j->info = true;
    memcpy(&j->sa, sa, salen);
    j->salen = salen;
    j->flags = flags;
    j->hostlen = host ? hostlen : 0;
    j->servlen = serv ? servlen : 0;
    if ((j->hostlen && !(j->host = malloc(j->hostlen))) || (j->servlen && !(j->serv = malloc(j->servlen)))) {
        job_free(j);
        return EAI_MEMORY;
    }
    if (offload(j) != 0)
        return EAI_SYSTEM;
    int rc = j->rc;
    if (rc == 0) {
        if (j->hostlen)
            memcpy(host, j->host, j->hostlen);
        if (j->servlen)
            memcpy(serv, j->serv, j->servlen);
    } else if (rc == EAI_SYSTEM) {
        errno = j->err;
    }
    job_free(j);
    return rc;
}
