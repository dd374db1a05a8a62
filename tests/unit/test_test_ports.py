"""The test support's free_port: ports no outgoing connection and no other test worker can take."""

import socket

import pytest

from tests.support import processes


@pytest.fixture
def fresh_ports(monkeypatch, tmp_path):
    """free_port as in a new process, for the xdist worker set with ``as_worker``, under a kernel whose
    range for outgoing connections' ports starts at ``first`` (written to a fake /proc file)."""
    def as_worker(worker, workers, first=32768):
        ranges = tmp_path / "ip_local_port_range"
        ranges.write_text(f"{first}\t60999\n")
        monkeypatch.setattr(processes, "_EPHEMERAL_RANGE", str(ranges))
        monkeypatch.setattr(processes, "_handed_out", None)
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(workers))
        return processes.free_port
    return as_worker


def test_ports_come_from_below_the_range_outgoing_connections_take_theirs_from(fresh_ports):
    free_port = fresh_ports("gw0", 1)
    ports = [free_port() for _ in range(50)]
    assert all(processes._LOW_PORT <= port < 32768 for port in ports)
    assert len(set(ports)) == 50, "a port was handed out twice in a row"


def test_each_worker_hands_out_ports_of_its_own_slice(fresh_ports):
    seen = {}
    for index in range(4):
        free_port = fresh_ports(f"gw{index}", 4)
        seen[index] = {free_port() for _ in range(30)}
    slice_size = (32768 - processes._LOW_PORT) // 4
    for index, ports in seen.items():
        low = processes._LOW_PORT + index * slice_size
        assert all(low <= port < low + slice_size for port in ports), (index, sorted(ports)[:5])


def test_a_port_something_listens_on_is_skipped(fresh_ports, monkeypatch):
    free_port = fresh_ports("gw0", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
            other.bind(("127.0.0.1", 0))
            spare = other.getsockname()[1]
        # The slice starts at the held port: the first port the process would hand out.
        monkeypatch.setattr(processes, "_handed_out", processes.collections.deque([taken, spare]))
        assert free_port() == spare


def test_without_room_below_that_range_the_kernel_picks(fresh_ports):
    free_port = fresh_ports("gw0", 1, first=processes._LOW_PORT + 50)
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))   # free, as promised
    assert port >= processes._LOW_PORT + 50
