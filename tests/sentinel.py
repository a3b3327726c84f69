"""A Redis primary, its replica and a Debian ``redis-sentinel`` watching them, as real processes.

Used by tests/test_sentinel.py (a failover mid-run) and the e2e (KEDA's redis-sentinel trigger).
"""

import shutil

import redis

from loadgen.stack import LocalStack, free_port, redis_server_binary, wait_until

PASSWORD = "s3ntinel-test-pw"
MASTER = "mymaster"


def sentinel_binary() -> list[str]:
    found = shutil.which("redis-sentinel")
    return [found] if found else [redis_server_binary(), "--sentinel"]  # the same program either way


class SentinelSet:
    """A primary, a replica and one sentinel (quorum 1), with their files in the stack's workdir.

    They listen on ``host`` (an address of this machine; the e2e's real node gives the pod bridge's
    gateway, which its pods reach), and the sentinel announces the master there.
    """

    def __init__(self, stack: LocalStack, host: str = "127.0.0.1"):
        self.stack, self.host = stack, host
        self.ports = {"primary": stack.redis_port, "replica": free_port()}
        self.sentinel_port = free_port()

    def start(self):
        for name, port in self.ports.items():
            folder = self.stack.workdir / name
            folder.mkdir()
            follow = ["--replicaof", self.host, str(self.ports["primary"])] if name == "replica" else []
            self.stack._spawn(name, [redis_server_binary(), "--port", str(port), "--bind", self.host, "--save", "",
                                     "--appendonly", "yes", "--appendfsync", "always", "--dir", str(folder),
                                     "--requirepass", PASSWORD, "--masterauth", PASSWORD, *follow])
            wait_until(lambda: self.client(name).ping(), 20, f"redis {name}")
        conf = self.stack.workdir / "sentinel.conf"
        conf.write_text(f"port {self.sentinel_port}\nbind {self.host}\ndir {self.stack.workdir}\n"
                        f"sentinel monitor {MASTER} {self.host} {self.ports['primary']} 1\n"
                        f"sentinel auth-pass {MASTER} {PASSWORD}\n"
                        f"sentinel down-after-milliseconds {MASTER} 1000\n"
                        f"sentinel failover-timeout {MASTER} 5000\n")
        self.stack._spawn("sentinel", [*sentinel_binary(), str(conf)])
        wait_until(lambda: self.master() == self.ports["primary"] and self.replicas_known(), 30, "sentinel ready")
        return self

    def client(self, name: str) -> redis.Redis:
        return redis.Redis(port=self.ports[name], host=self.host, password=PASSWORD)

    def sentinel(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel_port, host=self.host)

    def master(self) -> int:
        return int(self.sentinel().sentinel_get_master_addr_by_name(MASTER)[1])

    def replicas_known(self) -> bool:
        return bool(self.sentinel().sentinel_slaves(MASTER))

    def in_sync(self) -> bool:
        """Whether the replica has applied every write made so far: Redis's ``WAIT`` for one
        replica's acknowledgement of a marker written now (replication is one stream, so of all
        before it too). Comparing ``INFO`` offsets missed it under steady writes: the replica
        reports its offset once a second."""
        primary = self.client("primary")
        primary.set("test:replication-marker", "1")
        return primary.wait(1, 1000) >= 1

    @property
    def url(self) -> str:
        return f"sentinel://{self.host}:{self.sentinel_port}/0"
