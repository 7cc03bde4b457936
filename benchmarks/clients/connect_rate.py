# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""New TCP connections per second through the host's FORWARD path (stdlib only).

    python3 connect_rate.py serve ADDRESS PORT       # in the imds namespace: accept and close
    python3 connect_rate.py client ADDRESS PORT N    # in a bridge container: prints one JSON line

The client times N sequential connect() calls (each a SYN through FORWARD, DOCKER-USER,
conntrack and Docker's MASQUERADE) and closes each with a reset (SO_LINGER 0), so no
TIME_WAIT piles up on the client's ports between measurements.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def serve(address: str, port: int) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(1024)
    while True:
        connection, _ = listener.accept()
        connection.close()


def client(address: str, port: int, count: int) -> None:
    failed = 0
    start = time.perf_counter()
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
        sock.settimeout(2)
        try:
            sock.connect((address, port))
        except OSError:
            failed += 1
        finally:
            sock.close()
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {"connections": count, "failed": failed, "seconds": elapsed, "per_second": count / elapsed}
        )
    )


def main() -> None:
    mode, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "serve":
        serve(address, port)
    else:
        client(address, port, int(sys.argv[4]))


if __name__ == "__main__":
    main()
