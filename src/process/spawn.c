/*
 * spawn.c — the spawn start method and the guard at the top of main.
 *
 * spawn: posix_spawn (a vfork-style clone plus exec, no page-table copy) of
 * /proc/self/exe with argv {argv0, "--conc-process-child"} and one
 * extra environment variable, CONC_PROCESS_CHILD=<fd>:<mode>, naming the
 * child's end of a socketpair (the only fd posix_spawn lets through; every
 * conc fd is close-on-exec). The parent then writes the start request on
 * it (wire.c): function name, process name, argument bytes, and the
 * parent's pidfd plus any passed fds as SCM_RIGHTS. The child's guard
 * (conc_process_main, first thing in main, so every constructor — and so
 * every CONC_REGISTER — has run) reads it, looks the function up by name,
 * runs it and exit()s. Mode 's' starts the fork server instead.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "process/internal.h"

#define SPAWN_ENV "CONC_PROCESS_CHILD"

extern char **environ;
extern char *program_invocation_name;

int conc__spawn_program(pid_t *pid, int *sock, char mode)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return CONC_ESYS;
    size_t n = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    char **envp = malloc((n + 2) * sizeof *envp);
    if (!envp) {
        close(sv[0]);
        close(sv[1]);
        return CONC_ENOMEM;
    }
    char var[64];
    snprintf(var, sizeof var, SPAWN_ENV "=%d:%c", sv[1], mode);
    size_t k = 0;
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, SPAWN_ENV "=", sizeof SPAWN_ENV) != 0)
            envp[k++] = *e;
    envp[k++] = var;
    envp[k] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    /* dup2 onto itself clears close-on-exec in the child only. */
    posix_spawn_file_actions_adddup2(&fa, sv[1], sv[1]);
    char *argv[] = {program_invocation_name ? program_invocation_name : (char *)"conc-child",
                    (char *)"--conc-process-child", NULL};
    /* A fresh program starts with no blocked signals (a thread that blocks
     * SIGTERM for its signalfd must not make its children unkillable). */
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
    int err = posix_spawn(pid, "/proc/self/exe", &fa, &at, argv, envp);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    close(sv[1]);
    if (err) {
        close(sv[0]);
        errno = err;
        return err == ENOMEM ? CONC_ENOMEM : CONC_ESYS;
    }
    *sock = sv[0];
    return 0;
}

int conc__spawn_start(conc__child_t *c, const conc__launch_t *l)
{
    pid_t pid;
    int sock;
    int rc = conc__spawn_program(&pid, &sock, 'p');
    if (rc)
        return rc;
    c->pid = pid;
    c->pidfd = conc__pidfd_open(pid);
    if (c->pidfd < 0) {
        int e = errno;
        close(sock);
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        errno = e;
        return CONC_ESYS;
    }
    int self = conc__self_pidfd();
    /* If the child dies before reading, the send fails: its exit status
     * tells the story, so the start itself still succeeded. */
    conc__req_send(sock, CONC__REQ_PROCESS, l, l->entry->name, &self, self >= 0 ? 1 : 0);
    close(sock);
    return 0;
}

int conc_process_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const char *e = getenv(SPAWN_ENV);
    if (!e)
        return 0;
    char *end;
    long fd = strtol(e, &end, 10);
    /* exactly <digits>:<mode> ("" or ":p" would read as fd 0) */
    char mode = end != e && *e >= '0' && *e <= '9' && end[0] == ':' && end[1] && !end[2] ? end[1] : 0;
    unsetenv(SPAWN_ENV);
    if (fd < 0 || fd > 1 << 20 || (mode != 'p' && mode != 's')) {
        fprintf(stderr, "conc: bad " SPAWN_ENV " value\n");
        _exit(255);
    }
    if (mode == 's')
        conc__forkserver_main((int)fd);
    conc__req_t r;
    int rc = conc__req_recv((int)fd, &r);
    close((int)fd);
    if (rc) {
        /* The parent went away before telling us what to run. */
        _exit(255);
    }
    const conc_registration_t *entry = conc_registry_find(r.fn);
    if (!entry || entry->sig != CONC_SIG_PROCESS) {
        fprintf(stderr, "conc: spawned child: no process function '%s' in the registry\n", r.fn);
        _exit(255);
    }
    int nfixed = r.nrecv - (int)r.h.nfds;
    conc__child_info_t info = {r.name, r.ident, r.h.daemon != 0, r.parent_name, (pid_t)r.h.parent_pid,
                               nfixed > 0 ? r.fds[0] : -1, r.fds + (nfixed > 0 ? nfixed : 0),
                               r.nrecv - (nfixed > 0 ? nfixed : 0), false, CONC_SPAWN,
                               r.h.authkey, r.h.authkey_len};
    conc__become_child(&info);
    int code = conc__run_child_fn((conc_process_fn)(void (*)(void))entry->fn, r.arg, (size_t)r.h.arg_len);
    conc__req_free(&r);
    exit(code);
}
