"""A virtual network of Linux network namespaces on one machine, for topology tests.

One namespace is the *switch*: it holds a bridge and nothing else. Every *host* is a namespace
of its own with ``lo`` up and one veth, ``eth0``, whose peer is a port of the bridge; the host's
address is on ``eth0``. Nothing is added to the namespace the tests run in: the network exists
only inside these namespaces, so its addresses (:data:`SUBNET`) cannot clash with the machine's.
Every name carries a random suffix (``xz<hex>-<host>``), so parallel or crashed runs never share
a namespace, and :meth:`VirtualNetwork.close` deletes exactly the namespaces it created (their
links go with them).

A partition takes links down: :meth:`VirtualNetwork.disconnect` sets a host's bridge port down,
so the host reaches nobody and nobody reaches it (its own ``lo`` keeps working: processes on
one host still talk to each other); :meth:`VirtualNetwork.reconnect` sets it up again. Packets
across a cut link are dropped, not refused, as on a real network: a client sees a timeout.

Processes run with ``ip netns exec <namespace>`` through the harness (:meth:`Host.launch`), so
they log and stop by PID as everywhere else. The test itself stays outside: each process port
is mirrored by a :class:`Portal`, a relay from the same port on the test's loopback to
``127.0.0.1:<port>`` inside the host. So the harness's own probes and clients (``PING``, gRPC
health, Envoy's admin API) work unchanged, and see a host from inside, partitioned or not.
:meth:`Host.run` runs a function in a thread that has entered the host's namespace (what that
host can reach, e.g. to show a partition is in effect).

Needs root (``CAP_SYS_ADMIN``) and iproute2's ``ip``: :func:`unavailable` says why not.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Self, TypeVar

from harness.ports import LOOPBACK
from harness.process import ManagedProcess

T = TypeVar("T")

SUBNET = ipaddress.ip_network("10.77.0.0/24")
"""The hosts' addresses, from ``.10`` on; it exists only inside the test's namespaces."""

CLONE_NEWNET = 0x40000000  # <sched.h>; os.setns and os.CLONE_NEWNET arrive with Python 3.12
CALL_TIMEOUT = 10.0  # seconds, for one ``ip`` command or one Host.run call


class NetnsError(RuntimeError):
    """An ``ip`` command failed, or a namespace could not be entered."""


def ip_binary() -> str | None:
    """iproute2's ``ip`` (PATH, then /usr/sbin and /sbin), or None."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which("ip", path=search)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no ``ip``), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the tests as root)"
    binary = ip_binary()
    if binary is None:
        return "iproute2's `ip` is not installed (make test installs it)"
    probe = subprocess.run(
        [binary, "netns", "list"], capture_output=True, text=True, timeout=CALL_TIMEOUT, check=False
    )
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


def enter(namespace: str) -> None:
    """Move the calling *thread* into the named network namespace (``setns(2)``); sockets it
    creates from then on live there. Other threads are not affected.

    :raises NetnsError: the namespace does not exist or the call is not permitted.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    except OSError as exc:
        raise NetnsError(f"network namespace {namespace!r}: {exc}") from exc
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise NetnsError(f"setns({namespace!r}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until either ends; then shut both down (the other
    direction's pump ends too)."""
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Portal:
    """``127.0.0.1:port`` of the test's namespace relayed to ``127.0.0.1:port`` inside a host.

    A connection accepted here is relayed to a connection opened from inside the host; when
    either side closes, both do. The relay runs in daemon threads until :meth:`close`.
    """

    def __init__(self, namespace: str, port: int) -> None:
        self.namespace = namespace
        self.port = port
        # created here, in the test's namespace, before the accepting thread leaves it
        self._listener = socket.create_server((LOOPBACK, port))
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True, name=f"portal-{port}")
        self._thread.start()

    def _accept(self) -> None:
        try:
            enter(self.namespace)
        except NetnsError:
            self._listener.close()
            return
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            inside = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # in the host
            inside.settimeout(2.0)
            try:
                inside.connect((LOOPBACK, self.port))
            except OSError:
                inside.close()
                client.close()
                continue
            inside.settimeout(None)
            with self._lock:
                self._sockets.update((client, inside))
            threading.Thread(target=self._relay, args=(client, inside), daemon=True).start()

    def _relay(self, client: socket.socket, inside: socket.socket) -> None:
        back = threading.Thread(target=_pump, args=(inside, client), daemon=True)
        back.start()
        _pump(client, inside)
        back.join()
        with self._lock:
            self._sockets.difference_update((client, inside))
        client.close()
        inside.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets, self._sockets = set(self._sockets), set()
        for sock in sockets:  # the relays close them
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2)


class Host:
    """One host of a :class:`VirtualNetwork`: a namespace with ``address`` on ``eth0``."""

    def __init__(self, network: VirtualNetwork, name: str, address: str, port: str) -> None:
        self.network = network
        self.name = name
        self.namespace = f"{network.prefix}-{name}"
        self.address = address
        self.bridge_port = port  # the veth peer of eth0, in the switch namespace
        self.processes: list[ManagedProcess] = []

    def launch(self, process: ManagedProcess, ports: Sequence[int]) -> ManagedProcess:
        """Start ``process`` in this host (``ip netns exec``), after a :class:`Portal` for each
        of its ``ports``; wait (within its own ready timeout) until it is ready, seen through
        the portals, and until each port accepts inside the host (a portal accepts on its own).

        The process must listen on ``127.0.0.1`` of the host (as well as on :attr:`address`
        when other hosts use it). The network stops it on close.
        """
        for port in ports:
            self.network.portal(self, port)
        process.launcher = (self.network.ip, "netns", "exec", self.namespace)
        self.processes.append(process)
        process.start()
        for port in ports:
            inside = functools.partial(self.reaches, LOOPBACK, port)
            process.wait_until(inside, 10.0, f"listening on {port} inside {self.name}")
        return process

    def run(self, fn: Callable[[], T], timeout: float = CALL_TIMEOUT) -> T:
        """Call ``fn`` in a new thread inside this host's namespace; its result or exception.

        :raises TimeoutError: it did not return within ``timeout`` seconds.
        """
        outcome: list[T] = []
        failure: list[BaseException] = []

        def inside() -> None:
            try:
                enter(self.namespace)
                outcome.append(fn())
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=inside, daemon=True, name=f"in-{self.name}")
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"call in host {self.name} still running after {timeout}s")
        if failure:
            raise failure[0]
        return outcome[0]

    def reaches(self, address: str, port: int, timeout: float = 0.5) -> bool:
        """Whether a TCP connection from this host to ``address:port`` succeeds within
        ``timeout`` seconds."""

        def connect() -> bool:
            try:
                with socket.create_connection((address, port), timeout=timeout):
                    return True
            except OSError:
                return False

        return self.run(connect, timeout=timeout + CALL_TIMEOUT)

    def link_state(self) -> str:
        """``eth0``'s operational state as ``ip`` reports it: ``UP``, or ``DOWN`` (no carrier)
        while the host is disconnected."""
        out = self.network.call("-n", self.namespace, "-br", "link", "show", "dev", "eth0")
        return out.split()[1]

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address} netns={self.namespace}>"


class VirtualNetwork:
    """A switch and hosts; a context manager whose exit deletes every namespace it made.

    :raises NetnsError: an ``ip`` command failed (what was made so far is deleted).
    """

    def __init__(self) -> None:
        self.ip = ip_binary() or "ip"
        self.prefix = f"xz{secrets.token_hex(3)}"
        self.switch = f"{self.prefix}-switch"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._portals: list[Portal] = []

    def __enter__(self) -> Self:
        try:
            self._add_namespace(self.switch)
            self.call("-n", self.switch, "link", "add", "br0", "type", "bridge")
            self.call("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, *args: str) -> str:
        """Run ``ip ARGS``; its stdout. :raises NetnsError: it failed."""
        proc = subprocess.run(
            [self.ip, *args], capture_output=True, text=True, timeout=CALL_TIMEOUT, check=False
        )
        if proc.returncode != 0:
            raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def _add_namespace(self, name: str) -> None:
        self.call("netns", "add", name)
        self._namespaces.append(name)
        self.call("-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str) -> Host:
        """A new host ``name`` on the switch, with the next address of :data:`SUBNET`."""
        index = len(self.hosts)
        address = str(SUBNET.network_address + 10 + index)
        host = Host(self, name, address, port=f"p{index}")
        self._add_namespace(host.namespace)
        # both ends are created inside the namespaces: no name ever appears in the test's own
        self.call("-n", self.switch, "link", "add", host.bridge_port, "type", "veth",
                  "peer", "name", "eth0", "netns", host.namespace)  # fmt: skip
        self.call("-n", self.switch, "link", "set", host.bridge_port, "master", "br0", "up")
        cidr = f"{address}/{SUBNET.prefixlen}"
        self.call("-n", host.namespace, "addr", "add", cidr, "dev", "eth0")
        self.call("-n", host.namespace, "link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    def portal(self, host: Host, port: int) -> Portal:
        """A :class:`Portal` to ``port`` inside ``host`` (closed with the network)."""
        portal = Portal(host.namespace, port)
        self._portals.append(portal)
        return portal

    def disconnect(self, *hosts: Host) -> None:
        """Partition each host from every other: its bridge port goes down."""
        for host in hosts:
            self.call("-n", self.switch, "link", "set", host.bridge_port, "down")

    def reconnect(self, *hosts: Host) -> None:
        """Heal: each host's bridge port goes up again."""
        for host in hosts:
            self.call("-n", self.switch, "link", "set", host.bridge_port, "up")

    def close(self) -> None:
        """Stop every process launched in a host (by PID), close the portals and delete the
        namespaces this network created; the deletions go on when one fails."""
        for host in reversed(list(self.hosts.values())):
            for process in reversed(host.processes):
                with contextlib.suppress(Exception):
                    process.stop(timeout=5)
        for portal in self._portals:
            portal.close()
        self._portals.clear()
        errors = []
        for name in reversed(self._namespaces):
            try:
                self.call("netns", "delete", name)
            except NetnsError as exc:
                errors.append(str(exc))
        self._namespaces.clear()
        if errors:
            raise NetnsError("; ".join(errors))
