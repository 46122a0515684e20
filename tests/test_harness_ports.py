"""harness.ports.free_port: ports for the processes the tests start, chosen so that no
outgoing connection can be given the same port as its source port before they listen."""

from __future__ import annotations

import socket
from pathlib import Path

from harness.ports import FIRST_PORT, LOOPBACK, RESERVED_PORTS, _ephemeral_low, free_port


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    low = _ephemeral_low()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert not RESERVED_PORTS & set(ports)
    if low > FIRST_PORT:
        assert all(FIRST_PORT <= p < low for p in ports), (min(ports), max(ports), low)
    for port in ports[:20]:  # and each is bindable right now
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, port))


def test_the_ephemeral_range_is_read_from_the_kernel_or_defaults(tmp_path: Path) -> None:
    (tmp_path / "range").write_text("40000\t60999\n")
    assert _ephemeral_low(str(tmp_path / "range")) == 40000
    assert _ephemeral_low(str(tmp_path / "missing")) == 32768
    (tmp_path / "junk").write_text("")
    assert _ephemeral_low(str(tmp_path / "junk")) == 32768


def test_a_cluster_port_pair_is_never_handed_out_again() -> None:
    # the pair search shares free_port's record: neither port nor its bus port comes back
    from harness.ports import _handed_out, free_port_pair

    first = free_port_pair(10000)
    assert {first, first + 10000} <= _handed_out
    assert all(free_port() not in (first, first + 10000) for _ in range(200))
