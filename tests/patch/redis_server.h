/*
 * tests/patch/redis_server.h — start a throw-away redis-server on
 * 127.0.0.1 and a free port (no persistence, no config file), and stop it.
 * Shared by tests/patch/patch_test.c and bench/patch_bench.c.
 *
 * The server gets the environment without LD_PRELOAD (it has no green
 * threads; the patch would only cost it a check per call). It runs as our
 * child in its own process group and is stopped with SIGTERM, then SIGKILL
 * after 2 s.
 */
#ifndef CONC_TESTS_PATCH_REDIS_SERVER_H
#define CONC_TESTS_PATCH_REDIS_SERVER_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef struct redis_server {
    pid_t pid;
    int port;
} redis_server_t;

/* The redis-server program, or NULL when it is not installed. */
static inline const char *redis_server_path(void)
{
    static const char *const where[] = {"/usr/bin/redis-server", "/usr/local/bin/redis-server",
                                        "/usr/sbin/redis-server"};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++)
        if (access(where[i], X_OK) == 0)
            return where[i];
    return NULL;
}

static inline int redis__free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0)
        close(s);
    return port;
}

static inline bool redis__answers(int port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = false;
    if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
        static const char ping[] = "PING\r\n";
        char buf[16] = {0};
        ok = write(s, ping, sizeof ping - 1) == (ssize_t)(sizeof ping - 1) && read(s, buf, sizeof buf - 1) > 0 &&
             strncmp(buf, "+PONG", 5) == 0;
    }
    if (s >= 0)
        close(s);
    return ok;
}

/* Start the server; 0, or -1 with a reason in why. Waits (up to 10 s)
 * until it answers PING. */
static inline int redis_server_start(redis_server_t *r, char *why, size_t whylen)
{
    const char *prog = redis_server_path();
    if (!prog) {
        snprintf(why, whylen, "redis-server is not installed (Debian: apt-get install redis-server)");
        return -1;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        r->port = redis__free_port();
        if (r->port <= 0) {
            snprintf(why, whylen, "no free port: %s", strerror(errno));
            return -1;
        }
        char port[16];
        snprintf(port, sizeof port, "%d", r->port);
        char *argv[] = {(char *)prog, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--dir", "/tmp", "--daemonize", "no", "--loglevel", "warning", "--databases", "1",
                        "--protected-mode", "no", NULL};
        /* the environment minus LD_PRELOAD */
        size_t n = 0;
        while (environ[n])
            n++;
        char **envp = calloc(n + 1, sizeof *envp);
        if (!envp) {
            snprintf(why, whylen, "out of memory");
            return -1;
        }
        for (size_t i = 0, k = 0; i < n; i++)
            if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
                envp[k++] = environ[i];
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawnattr_t at;
        posix_spawnattr_init(&at);
        posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
        posix_spawnattr_setpgroup(&at, 0);
        int rc = posix_spawn(&r->pid, prog, &fa, &at, argv, envp);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&at);
        free(envp);
        if (rc != 0) {
            snprintf(why, whylen, "cannot start %s: %s", prog, strerror(rc));
            return -1;
        }
        for (int i = 0; i < 1000; i++) {
            if (redis__answers(r->port))
                return 0;
            int st;
            if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
                r->pid = 0;
                break; /* died: the port was taken after all? try another */
            }
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
        }
        if (r->pid > 0) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, NULL, 0);
            r->pid = 0;
        }
    }
    snprintf(why, whylen, "redis-server did not answer on 127.0.0.1");
    return -1;
}

static inline void redis_server_stop(redis_server_t *r)
{
    if (r->pid <= 0)
        return;
    kill(r->pid, SIGTERM);
    for (int i = 0; i < 200; i++) {
        if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
            r->pid = 0;
            return;
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
}

#endif
