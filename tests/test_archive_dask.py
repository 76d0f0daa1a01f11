"""`neurowire compress --dask`: chunks written by the workers of a distributed cluster
make the same store, byte for byte, as one process does."""

import os

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from neurowire.archive.batch import PROGRESS_DIR, compress, decompress  # noqa: E402
from test_archive_codec import grid_signal  # noqa: E402

SETTINGS = dict(chunk_samples=2048, chunk_channels=4, progress=False)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    for k in range(6):  # one file per channel, lengths differing as in the challenge set
        np.save(d / f"ch{k:02d}.npy", grid_signal(9000 - 37 * k, 1, seed=k)[:, 0])
    np.save(d / "probe.npy", grid_signal(6000, 5, seed=99))
    return d


def store_files(root):
    return {os.path.relpath(os.path.join(r, f), root): open(os.path.join(r, f), "rb").read()
            for r, _, fs in os.walk(root) for f in fs}


@pytest.fixture(scope="module")
def reference(recordings, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "single.zarr"
    compress([str(recordings)], str(out), dask="off", workers=1, **SETTINGS)
    return out


@pytest.mark.timeout(180)
def test_distributed_cluster_matches_single_process(recordings, reference, tmp_path):
    # Worker processes, not threads: the codec and the inputs travel by pickle.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        out = tmp_path / "cluster.zarr"
        s = compress([str(recordings)], str(out), dask=cluster.scheduler_address,
                     **SETTINGS)
    assert s.chunks_done == s.chunks_total == 5 * 3
    assert not (out / PROGRESS_DIR).exists()
    assert store_files(out) == store_files(reference)
    back = tmp_path / "back"
    decompress(str(out), str(back), progress=False)
    for name in os.listdir(recordings):
        assert (back / name).read_bytes() == (recordings / name).read_bytes()


def test_local_cluster_resumes_single_process_run(recordings, reference, tmp_path):
    """A run cut short in one process is finished by the (default) local cluster."""
    out = tmp_path / "mixed.zarr"

    class Stop(Exception):
        pass

    count = []

    def stop(_chunk):
        count.append(1)
        if len(count) == 4:
            raise Stop

    with pytest.raises(Stop):
        compress([str(recordings)], str(out), dask="off", workers=1, _after_chunk=stop,
                 **SETTINGS)
    s = compress([str(recordings)], str(out), dask="local", workers=2, **SETTINGS)
    assert s.chunks_skipped >= 4 and s.chunks_done + s.chunks_skipped == s.chunks_total
    assert store_files(out) == store_files(reference)


def _listening_addresses():
    """{socket inode: local address} of this process's listening TCP sockets (/proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    found[fields[9]] = fields[1].split(":")[0]
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")
def test_local_cluster_listens_on_loopback_only():
    from neurowire.archive.batch import _open_scheduler

    before = _listening_addresses()
    client, close = _open_scheduler("local", 1)
    try:
        opened = [a for inode, a in _listening_addresses().items() if inode not in before]
    finally:
        close()
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    assert opened and set(opened) <= loopback, opened


def test_cli_default_is_single_process():
    from neurowire.cli import build_parser

    argv = ["compress", "in", "-o", "out.zarr"]
    assert build_parser(argv).parse_args(argv).dask == "off"
