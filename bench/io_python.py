"""io_bench's Python peers: `io_python.py <impl> [port]` prints "ready <port>"
and serves until killed.

  gevent   echo: gevent.server.StreamServer, a greenlet per connection
  asyncio  echo: an asyncio Protocol (data_received -> transport.write), the
           fast path the asyncio docs point to for raw throughput
  uvloop   echo: the same Protocol on uvloop's loop
  pywsgi   HTTP: gevent.pywsgi.WSGIServer answering "hello\\n" (keep-alive)
"""
import socket
import sys


def nodelay(sock):
    # Every server in the bench answers with TCP_NODELAY (asyncio, uvloop, Go,
    # nginx and conc set it themselves); gevent leaves Nagle on, and pywsgi's
    # separate header and body writes then wait for the client's delayed ACK
    # (40 ms a response), which would measure the ACK timer, not gevent.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def ready(port):
    print("ready %d" % port, flush=True)


def gevent_echo(port):
    from gevent.server import StreamServer

    def handle(sock, addr):
        nodelay(sock)
        while True:
            data = sock.recv(4096)
            if not data:
                break
            sock.sendall(data)

    server = StreamServer(("127.0.0.1", port), handle, backlog=4096)
    server.init_socket()
    ready(server.server_port)
    server.serve_forever()


def pywsgi(port):
    from gevent.pywsgi import WSGIServer

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        return [b"hello\n"]

    class Server(WSGIServer):
        def handle(self, sock, address):
            nodelay(sock)
            WSGIServer.handle(self, sock, address)

    server = Server(("127.0.0.1", port), app, log=None, backlog=4096)
    server.init_socket()
    ready(server.server_port)
    server.serve_forever()


def asyncio_echo(port, use_uvloop):
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", port, backlog=4096)
        ready(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    if use_uvloop:
        import uvloop
        uvloop.install()
    asyncio.run(main())


if __name__ == "__main__":
    impl = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    try:
        if impl == "gevent":
            gevent_echo(port)
        elif impl == "pywsgi":
            pywsgi(port)
        elif impl in ("asyncio", "uvloop"):
            asyncio_echo(port, impl == "uvloop")
        else:
            sys.exit("io_python: unknown impl " + impl)
    except ImportError as e:  # the bench prints a skip note for status 77
        print("io_python: %s: %s" % (impl, e), file=sys.stderr)
        sys.exit(77)
