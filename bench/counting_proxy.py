#!/usr/bin/env python3
"""A counting HTTP/1.1 proxy for bench/mirror.sh: forwards each request to UPSTREAM
(host:port, one request per connection, `Connection: close` upstream) and appends
"<bytes relayed back> <method> <path>" to LOG when the response ends.

    counting_proxy.py LISTEN_PORT_FILE UPSTREAM LOG

Listens on 127.0.0.1 on a free port and writes the port to LISTEN_PORT_FILE.
"""
import socket
import sys
import threading

port_file, upstream, log_path = sys.argv[1], sys.argv[2], sys.argv[3]
up_host, up_port = upstream.rsplit(":", 1)
lock = threading.Lock()


def handle(client):
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = client.recv(65536)
            if not chunk:
                return
            data += chunk
            if data[:1] == b"\x16":
                # A TLS ClientHello (clients probe HTTPS first): not HTTP, hang up at
                # once, as an HTTP server does, instead of waiting for a request head.
                return
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        method, path = lines[0].split(b" ")[:2]
        kept = [l for l in lines[1:] if not l.lower().startswith(b"connection:")]
        out = b"\r\n".join([lines[0]] + kept + [b"Connection: close", b"", b""]) + rest
        up = socket.create_connection((up_host, int(up_port)))
        up.sendall(out)
        total = 0
        while True:
            chunk = up.recv(262144)
            if not chunk:
                break
            total += len(chunk)
            client.sendall(chunk)
        up.close()
        with lock, open(log_path, "a") as f:
            f.write(f"{total} {method.decode()} {path.decode()}\n")
    except OSError:
        pass
    finally:
        client.close()


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(128)
with open(port_file, "w") as f:
    f.write(str(srv.getsockname()[1]))
while True:
    conn, _ = srv.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
