"""Free loopback ports for pipelines started on the fly (`neurowire bench stream`, tests)."""
import random
import socket

# Below Linux's ephemeral range (32768-60999 by default). A port from that range can be taken
# at any moment as the source port of an outgoing connection -- even by a client reconnecting
# to that very port while its server restarts, which then connects to itself and keeps the
# restarted server from binding. The daemon's own defaults (7340-7343) are safe for the same
# reason.
LOWEST, HIGHEST = 20000, 32767


def free_loopback_port() -> int:
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randint(LOWEST, HIGHEST)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {LOWEST}..{HIGHEST}")
