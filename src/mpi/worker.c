/*
 * worker.c — a worker rank of the MPI executor: it waits for messages from
 * the parent (rank 0 of its communicator), runs the tasks of each T_TASKS
 * message with the process pool's own runner (conc__pool_remote_run) and
 * answers with one T_RESULTS message holding every result of that batch,
 * in order. T_CONFIG (a new executor) runs the initializer; T_DETACH ends
 * an executor (under mpirun the rank then waits for the next one); T_EXIT
 * ends the worker.
 *
 * Waiting: Open MPI's blocking receive spins on a core; on a shared
 * machine idle workers would eat it. conc__mpi_probe spins for ~200 µs,
 * then yields, then sleeps with a growing pause (at most 2 ms), so a busy
 * pool keeps its latency and an idle one costs nothing.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mpi/internal.h"
#include "pool/remote.h"

int64_t conc__mpi_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int conc__mpi_probe(MPI_Comm comm, int source, MPI_Status *st)
{
    int64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        int flag = 0;
        int rc = MPI_Iprobe(source, MPI_ANY_TAG, comm, &flag, st);
        if (rc != MPI_SUCCESS || flag)
            return rc;
        if (i < 64)
            continue;
        int64_t now = conc__mpi_now();
        if (!t0)
            t0 = now;
        int64_t idle = now - t0;
        if (idle < 200000) {
            sched_yield();
        } else {
            int64_t ns = idle / 8 < 2000000 ? idle / 8 : 2000000;
            struct timespec ts = {0, ns};
            nanosleep(&ts, NULL);
        }
    }
}

static int send(MPI_Comm comm, int tag, const void *p, size_t n)
{
    return MPI_Send(p, (int)n, MPI_BYTE, 0, tag, comm);
}

/* Run the initializer of a T_CONFIG message: 0, or its failure. */
static int run_init(const unsigned char *m, size_t n, char *msg, size_t msgcap)
{
    mcfg_t c;
    if (n < sizeof c)
        return 0;
    memcpy(&c, m, sizeof c);
    if (!c.namelen)
        return 0;
    if (c.namelen > 255 || c.namelen > n - sizeof c || c.arglen > n - sizeof c - c.namelen) {
        snprintf(msg, msgcap, "malformed configuration");
        return CONC_EBROKEN;
    }
    char name[256];
    memcpy(name, m + sizeof c, c.namelen);
    name[c.namelen] = 0;
    const conc_registration_t *r = conc_registry_find(name);
    if (!r) {
        snprintf(msg, msgcap, "initializer %.200s not found in the worker's registry", name);
        return CONC_EINVAL;
    }
    conc_fail_clear();
    int rc = ((conc_process_fn)(void (*)(void))r->fn)(m + sizeof c + c.namelen, c.arglen);
    const char *fm;
    int code = conc_failure(&fm);
    if (!code && rc) {
        code = rc < 0 ? rc : CONC_EFAILED;
        fm = rc < 0 ? conc_strerror(rc) : "initializer returned a nonzero value";
    }
    if (code)
        snprintf(msg, msgcap, "%s", fm ? fm : "");
    conc_fail_clear();
    return code;
}

/* Run a T_TASKS message and send its T_RESULTS: each blob is appended
 * straight after its length word in one buffer (*out, kept between
 * batches). */
static int run_batch(MPI_Comm comm, const unsigned char *m, size_t n, int initfail, const char *initmsg,
                     void **out, size_t *cap)
{
    mbatch_t h;
    if (n < sizeof h)
        return MPI_SUCCESS;
    memcpy(&h, m, sizeof h);
    size_t pos = sizeof h, used = sizeof h;
    int64_t t0 = conc__mpi_now();
    uint32_t done = 0;
    for (; done < h.n; done++) {
        uint64_t tl;
        if (n - pos < 8)
            break;
        memcpy(&tl, m + pos, 8);
        pos += 8;
        if (tl > n - pos)
            break;
        if (used + 8 > *cap) {
            size_t c = *cap ? *cap * 2 : 65536;
            void *o = realloc(*out, c);
            if (!o)
                return MPI_ERR_NO_MEM;
            *out = o;
            *cap = c;
        }
        size_t lenat = used;
        used += 8;
        int rc;
        if (initfail) {
            uint32_t count = 1;
            if (tl >= 16)
                memcpy(&count, m + pos + 12, 4); /* wtask_t.count */
            rc = conc__pool_remote_fail_blob(count, CONC_EBROKEN, initmsg, out, cap, &used);
        } else {
            rc = conc__pool_remote_run(m + pos, tl, out, cap, &used);
            if (rc == CONC_EBROKEN)
                rc = conc__pool_remote_fail_blob(1, CONC_EBROKEN, "worker: malformed task", out, cap, &used);
        }
        if (rc)
            return MPI_ERR_NO_MEM;
        uint64_t bl = used - lenat - 8;
        memcpy((unsigned char *)*out + lenat, &bl, 8);
        pos += MPAD8(tl) <= n - pos ? MPAD8(tl) : n - pos;
    }
    if (*cap < sizeof h) {
        void *o = realloc(*out, 65536);
        if (!o)
            return MPI_ERR_NO_MEM;
        *out = o;
        *cap = 65536;
    }
    mbatch_t r = {done, 0, (uint64_t)(conc__mpi_now() - t0)};
    memcpy(*out, &r, sizeof r);
    return send(comm, T_RESULTS, *out, used);
}

int conc__mpi_serve(MPI_Comm comm, int world)
{
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    unsigned char *buf = NULL;
    void *out = NULL;
    size_t cap = 0, ocap = 0;
    int initfail = 0;
    char initmsg[320] = "";
    for (;;) {
        MPI_Status st;
        if (conc__mpi_probe(comm, 0, &st) != MPI_SUCCESS)
            break;
        int cnt = 0;
        MPI_Get_count(&st, MPI_BYTE, &cnt);
        size_t n = cnt > 0 ? (size_t)cnt : 0;
        if (n + 1 > cap) {
            free(buf);
            cap = n + 1 < 65536 ? 65536 : n + 1;
            if (!(buf = malloc(cap)))
                break;
        }
        if (MPI_Recv(buf, cnt, MPI_BYTE, 0, st.MPI_TAG, comm, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            break;
        int rc = MPI_SUCCESS;
        switch (st.MPI_TAG) {
        case T_CONFIG: {
            mready_t r = {(int32_t)getpid(), 0, {0}};
            gethostname(r.host, sizeof r.host - 1);
            rc = send(comm, T_READY, &r, sizeof r);
            char msg[256];
            int code = run_init(buf, n, msg, sizeof msg);
            initfail = code != 0;
            if (code) {
                snprintf(initmsg, sizeof initmsg, "BrokenMPIExecutor: initializer failed: %s", msg);
                size_t ml = strlen(msg) + 1;
                unsigned char fm[4 + 256];
                int32_t c = code;
                memcpy(fm, &c, 4);
                memcpy(fm + 4, msg, ml);
                if (rc == MPI_SUCCESS)
                    rc = send(comm, T_INITFAIL, fm, 4 + ml);
            }
            break;
        }
        case T_TASKS:
            rc = run_batch(comm, buf, n, initfail, initmsg, &out, &ocap);
            break;
        case T_DETACH:
            initfail = 0;
            if (!world) /* a spawned worker serves one executor */
                goto done;
            break;
        case T_EXIT:
            goto done;
        default:
            break;
        }
        if (rc != MPI_SUCCESS)
            break;
    }
    free(buf);
    free(out);
    return -1;
done:
    free(buf);
    free(out);
    return 0;
}
