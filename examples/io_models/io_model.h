/*
 * io_model.h — the few lines every server in examples/io_models/ shares.
 *
 * Each server is a program: `io_model_<name> [port]` listens on
 * 127.0.0.1:port (0 or nothing: the kernel picks one), prints
 * "ready <port>" on stdout once it accepts connections, and then echoes
 * every byte it reads back to its sender until it is killed (SIGTERM).
 * A model the kernel cannot run here (io_uring switched off, ...) prints
 * why on stderr and exits with status 77 ("skipped").
 *
 * Plain POSIX sockets on purpose: the models show the system calls, so
 * only the green servers use conc.
 */
#ifndef IO_MODEL_H
#define IO_MODEL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define IO_MODEL_SKIP 77 /* exit status: this model cannot run here */

static void io_model_die(const char *what)
{
    perror(what);
    exit(1);
}

/* Listen on 127.0.0.1:argv[1] (non-blocking if nonblock), print
 * "ready <port>", return the listening fd. */
static int io_model_listen(int argc, char **argv, int nonblock)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (fd < 0)
        io_model_die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* inherited by accepted sockets */
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, SOMAXCONN) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0)
        io_model_die("bind/listen");
    printf("ready %d\n", ntohs(a.sin_port));
    fflush(stdout);
    return fd;
}

#endif /* IO_MODEL_H */
