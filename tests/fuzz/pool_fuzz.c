/*
 * pool_fuzz.c — libFuzzer target for what a process-pool worker sends
 * back through the shared result ring (src/pool/engine.c): the input is
 * one M_RESULTS message, any bytes, parsed for an engine with tasks in
 * flight on two workers. Whatever it says, the parser must not read past
 * the message, and every result it assembles must be consistent: each
 * item's bytes inside the block, each failure message NUL-terminated
 * inside its item — what finish_task and the futures later rely on.
 * (The ring itself is the queue's: queue_fuzz.)
 *
 * Build and run: tests/fuzz/run [seconds] pool
 */
#include <stdlib.h>

#include "pool/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static task_t *mk(uint64_t id, uint32_t count, uint32_t kind)
{
    task_t *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    t->id = id;
    t->count = count;
    t->kind = kind;
    return t;
}

static void check(const task_t *t)
{
    const cres_t *c = t->res;
    if (!c)
        return;
    if (c->got > c->count || c->used > c->cap)
        __builtin_trap();
    unsigned sum = 0;
    for (uint32_t j = 0; j < c->got; j++) {
        uint64_t off;
        uint32_t len;
        int32_t code = cres_item(c, j, &off, &len);
        if (off > c->used || len > c->used - off)
            __builtin_trap();
        const unsigned char *d = cres_data((cres_t *)c) + off;
        for (uint32_t k = 0; k < len; k++)
            sum += d[k];
        if (code && (len == 0 || d[len - 1] != 0))
            __builtin_trap();
    }
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    engine_t e;
    memset(&e, 0, sizeof e);
    wslot_t w[2];
    memset(w, 0, sizeof w);
    e.nw = 2;
    e.w = w;
    task_t *ts[5] = {mk(1, 1, K_BYTES), mk(2, 3, K_CHUNK), mk(3, 40, K_CHUNK), mk(4, 1, K_WORD),
                     mk(5, 2, K_CHUNK)};
    w[0].head = ts[0], ts[0]->next = ts[1], ts[1]->next = ts[2], ts[2]->next = ts[3];
    w[0].tail = ts[3], w[0].ninflight = 4;
    w[1].head = w[1].tail = ts[4], w[1].ninflight = 1;
    /* an exact-size copy: a read past the message is an ASan report */
    unsigned char *m = malloc(size ? size : 1);
    if (!m)
        abort();
    memcpy(m, data, size);
    /* two passes over the same bytes: pieces that continue a task */
    for (int pass = 0; pass < 2; pass++) {
        task_t *done = NULL;
        (void)conc__engine_parse_results(&e, m, size, &done);
        for (task_t *t = done; t; t = t->next)
            check(t);
    }
    for (int i = 0; i < 5; i++) {
        check(ts[i]);
        free(ts[i]->res);
        free(ts[i]);
    }
    free(m);
    return 0;
}
