/*
 * bench/io_uv.c — io_bench's libuv peer: the echo server as libuv's own
 * guide writes it (uv_tcp_t per connection, uv_read_start with an alloc
 * callback, one uv_write_t per echo, freed in its callback), on the default
 * loop. `io_uv_peer [port]` prints "ready <port>" once it listens.
 */
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

typedef struct {
    uv_write_t req;
    uv_buf_t buf;
} write_req_t;

static uv_loop_t *loop;

static void alloc_buffer(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = suggested;
}

static void on_close(uv_handle_t *h) { free(h); }

static void echo_write(uv_write_t *req, int status)
{
    write_req_t *wr = (write_req_t *)req;
    if (status)
        fprintf(stderr, "io_uv: write: %s\n", uv_strerror(status));
    free(wr->buf.base);
    free(wr);
}

static void echo_read(uv_stream_t *client, ssize_t nread, const uv_buf_t *buf)
{
    if (nread > 0) {
        write_req_t *req = malloc(sizeof *req);
        req->buf = uv_buf_init(buf->base, (unsigned)nread);
        uv_write(&req->req, client, &req->buf, 1, echo_write);
        return;
    }
    if (nread < 0)
        uv_close((uv_handle_t *)client, on_close);
    free(buf->base);
}

static void on_new_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    uv_tcp_t *client = malloc(sizeof *client);
    uv_tcp_init(loop, client);
    if (uv_accept(server, (uv_stream_t *)client) == 0) {
        uv_tcp_nodelay(client, 1);
        uv_read_start((uv_stream_t *)client, alloc_buffer, echo_read);
    } else {
        uv_close((uv_handle_t *)client, on_close);
    }
}

int main(int argc, char **argv)
{
    loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in addr;
    uv_tcp_init(loop, &server);
    uv_ip4_addr("127.0.0.1", argc > 1 ? atoi(argv[1]) : 0, &addr);
    uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    int r = uv_listen((uv_stream_t *)&server, 4096, on_new_connection);
    if (r) {
        fprintf(stderr, "io_uv: listen: %s\n", uv_strerror(r));
        return 1;
    }
    struct sockaddr_in name;
    int len = sizeof name;
    uv_tcp_getsockname(&server, (struct sockaddr *)&name, &len);
    printf("ready %d\n", ntohs(name.sin_port));
    fflush(stdout);
    return uv_run(loop, UV_RUN_DEFAULT);
}
