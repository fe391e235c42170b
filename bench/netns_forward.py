#!/usr/bin/env python3
"""Forwards ADDR (host:port on the host's loopback) into network namespaces: in each named
namespace (a name under /run/netns) a listener on the same ADDR, whose connections are
relayed to ADDR in the namespace this script started in. Traffic stays on the loopbacks.
Used by bench/services.sh so that every simulated host pulls from the fixture registry at the
same address, as crates/testkit/src/netns.rs does for the tests.

    netns_forward.py 127.0.0.1:5000 ns1 ns2 ...    (runs until killed)
"""
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def pump(src, dst):
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            dst.sendall(b)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve(listener, host, port):
    while True:
        inner, _ = listener.accept()
        try:
            outer = socket.create_connection((host, port))
        except OSError:
            inner.close()
            continue
        threading.Thread(target=pump, args=(inner, outer), daemon=True).start()
        threading.Thread(target=pump, args=(outer, inner), daemon=True).start()


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    port = int(port)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    listeners = []
    for name in sys.argv[2:]:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        setns(fd)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(128)
        listeners.append(s)
        setns(home)
        os.close(fd)
    threads = [threading.Thread(target=serve, args=(s, host, port), daemon=True) for s in listeners]
    for t in threads:
        t.start()
    print("ready", flush=True)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
