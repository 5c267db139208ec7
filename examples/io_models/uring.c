/*
 * uring.c — model 5, asynchronous I/O with io_uring.
 *
 *   The program does not wait for readiness and then copy: it hands the
 *   kernel whole operations ("accept on this fd", "receive into this
 *   buffer", "send these bytes") through a submission ring in shared
 *   memory, and later reaps their results from a completion ring. One
 *   io_uring_enter both submits everything queued this turn and waits for
 *   at least one completion. Each connection always has exactly one
 *   operation in flight: a recv, or the send of what that recv brought.
 *
 * Costs: buffers belong to the kernel while an operation is in flight (the
 * program must not touch or free them), completions come back in any
 * order, and the kernel may forbid io_uring (kernel.io_uring_disabled,
 * seccomp in containers): then this server exits with status 77.
 * Gains: one syscall per batch of operations instead of one per read,
 * write and epoll_wait.
 */
#include "io_model.h"

#include <liburing.h>
#include <stdint.h>

enum { OP_ACCEPT, OP_RECV, OP_SEND };

struct conn {
    int fd;
    int len, off;
    char buf[4096];
};

static struct io_uring ring;

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *s;
    while (!(s = io_uring_get_sqe(&ring)))
        io_uring_submit(&ring); /* the ring is full: hand the batch over first */
    return s;
}

/* The user data of an operation: the connection pointer with the op kind in
 * its low bits (a struct conn is at least 4-byte aligned). */
static void submit(struct conn *c, int op, int lfd)
{
    struct io_uring_sqe *s = sqe_get();
    if (op == OP_ACCEPT)
        io_uring_prep_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
    else if (op == OP_RECV)
        io_uring_prep_recv(s, c->fd, c->buf, sizeof c->buf, 0);
    else
        io_uring_prep_send(s, c->fd, c->buf + c->off, (size_t)(c->len - c->off), MSG_NOSIGNAL);
    io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)c | (uint64_t)op);
}

int main(int argc, char **argv)
{
    int rc = io_uring_queue_init(4096, &ring, 0);
    if (rc < 0) {
        fprintf(stderr, "uring: io_uring_setup: %s: model skipped\n", strerror(-rc));
        return IO_MODEL_SKIP;
    }
    int lfd = io_model_listen(argc, argv, 0);
    submit(NULL, OP_ACCEPT, lfd);
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        rc = io_uring_submit_and_wait(&ring, 1); /* one syscall: submit the batch, wait for one */
        if (rc < 0 && rc != -EINTR)
            io_model_die("io_uring_enter");
        io_uring_for_each_cqe(&ring, head, cqe) {
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            struct conn *c = (struct conn *)(uintptr_t)(ud & ~(uint64_t)3);
            int op = (int)(ud & 3), res = cqe->res;
            seen++;
            if (op == OP_ACCEPT) {
                submit(NULL, OP_ACCEPT, lfd); /* keep one accept in flight */
                if (res >= 0 && (c = calloc(1, sizeof *c))) {
                    c->fd = res;
                    submit(c, OP_RECV, lfd);
                } else if (res >= 0) {
                    close(res);
                }
                continue;
            }
            if (res <= 0 && !(op == OP_SEND && res == 0)) { /* EOF or error: the connection is done */
                close(c->fd);
                free(c);
                continue;
            }
            if (op == OP_RECV)
                c->off = 0, c->len = res;
            else
                c->off += res;
            submit(c, c->off < c->len ? OP_SEND : OP_RECV, lfd); /* echo it, or read the next */
        }
        io_uring_cq_advance(&ring, seen);
    }
}
