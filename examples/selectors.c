/*
 * selectors.c — the echo server of Python's selectors documentation, in C:
 * one OS thread, one selector, accept and read callbacks stored as the keys'
 * data. Clients on another thread check the echo, then the server stops.
 *
 *     ./selectors [select|poll|epoll|uring|signal]   # default: DefaultSelector
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <conc.h>

typedef void handler_fn(conc_selector_t *sel, int fd);
static int served;

static void echo(conc_selector_t *sel, int fd) /* def read(conn, mask): */
{
    char buf[1000];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
        send(fd, buf, (size_t)n, MSG_NOSIGNAL); /* conn.send(data): a tiny echo fits */
        return;
    }
    conc_selector_unregister(sel, fd, NULL); /* sel.unregister(conn) */
    close(fd);
    served++;
}

static void accept_conn(conc_selector_t *sel, int fd) /* def accept(sock, mask): */
{
    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c >= 0)
        conc_selector_register(sel, c, CONC_SEL_READ, (void *)echo, NULL);
}

static int port;
enum { CLIENTS = 20 };

static void *clients(void *arg)
{
    (void)arg;
    int ok = 0;
    for (int i = 0; i < CLIENTS; i++) {
        int fd;
        char buf[32], got[32] = "";
        if (conc_tcp_dial("127.0.0.1", port, 5.0, &fd) != 0)
            continue;
        int n = snprintf(buf, sizeof buf, "hello %d", i);
        conc_write_all(fd, buf, (size_t)n, NULL, 5.0);
        conc_read_exact(fd, got, (size_t)n, NULL, 5.0);
        ok += memcmp(buf, got, (size_t)n) == 0;
        conc_close(fd);
    }
    return (void *)(intptr_t)ok;
}

int main(int argc, char **argv)
{
    conc_selector_backend_t b = CONC_SEL_DEFAULT;
    const char *names[] = {"default", "select", "poll", "epoll", "uring", "signal"};
    for (int i = 0; argc > 1 && i < 6; i++)
        if (strcmp(argv[1], names[i]) == 0)
            b = (conc_selector_backend_t)i;
    conc_selector_t *sel;
    int rc = conc_selector_new(&sel, b); /* sel = selectors.DefaultSelector() */
    if (rc) {
        printf("selector %s: %s\n", names[b], conc_strerror(rc));
        return rc == CONC_ENOTSUP ? 0 : 1;
    }
    int lfd;
    if (conc_tcp_listen("127.0.0.1", 0, 128, &lfd) != 0)
        return 1;
    port = conc_socket_port(lfd);
    conc_selector_register(sel, lfd, CONC_SEL_READ, (void *)accept_conn, NULL);

    pthread_t th;
    pthread_create(&th, NULL, clients, NULL);
    while (served < CLIENTS) {
        conc_selector_ready_t ev[64];
        int n = conc_selector_select(sel, 5.0, ev, 64); /* events = sel.select() */
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++) /* callback = key.data; callback(key.fileobj, mask) */
            ((handler_fn *)ev[i].key->data)(sel, ev[i].key->fd);
    }
    void *ok;
    pthread_join(th, &ok);
    printf("%s selector: %d of %d clients echoed\n", conc_selector_backend_name(conc_selector_backend(sel)),
           (int)(intptr_t)ok, CLIENTS);
    conc_selector_close(sel);
    close(lfd);
    return (intptr_t)ok == CLIENTS ? 0 : 1;
}
