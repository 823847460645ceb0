"""rayloom.ports: picked ports stay out of the kernel's ephemeral range, are bindable, and are not
handed out twice (CI once saw Serve's HAProxy find the serve.port a test had picked taken)."""

from __future__ import annotations

import socket

from rayloom import ports


def test_free_ports_are_outside_the_ephemeral_range_distinct_and_bindable():
    ephemeral = ports._ephemeral_range()
    picked = [ports.free_port() for _ in range(50)]
    assert len(set(picked)) == 50
    for port in picked:
        assert port not in ephemeral and port in ports._QUIET_BAND
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_on_any_interface_excluded_or_handed_out_is_skipped():
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        taken = held.getsockname()[1]
        with socket.socket() as second:
            second.bind(("127.0.0.1", 0))
            loopback_only = second.getsockname()[1]
            first = ports.free_port()
            # A listener on the wildcard address and a socket bound on the host both block a port.
            candidates = [taken, loopback_only, first, 7]
            assert ports.pick_free_port(candidates, "127.0.0.1", exclude=(7,)) is None
    # Free again, and never handed out: taken now.
    assert ports.pick_free_port([first, taken], "127.0.0.1") == taken


def test_free_port_honours_exclude():
    port = ports.free_port()
    ports._handed_out.clear()  # forget it, so only `exclude` keeps it out
    assert ports.pick_free_port([port], exclude=(port,)) is None
    assert ports.pick_free_port([port]) == port
