"""bench/profile_stream.py's parts that need no perf: reading threads' scheduling figures."""
import importlib.util
import os
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def profile_stream():
    spec = importlib.util.spec_from_file_location("profile_stream",
                                                  ROOT / "bench" / "profile_stream.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_schedstat_lists_every_thread_of_a_process(profile_stream):
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        threads = profile_stream.schedstat(os.getpid())
    finally:
        stop.set()
        helper.join()
    assert str(threading.get_native_id()) in threads and str(helper.native_id) in threads
    for name, on_cpu, waiting in threads.values():
        assert isinstance(name, str) and on_cpu >= 0 and waiting >= 0


def test_the_busiest_thread_is_the_one_that_ran_most_outside_libzmqs(profile_stream):
    before = {"1": ("python", 100, 10), "2": ("python", 0, 0), "3": ("ZMQbg/IO/0", 0, 0)}
    after = {"1": ("python", 600, 40), "2": ("python", 300, 500),
             "3": ("ZMQbg/IO/0", 9000, 9000), "4": ("python", 5000, 0)}  # 4: new, no start
    assert profile_stream.busiest_thread(before, after) == (500, 30)
    assert profile_stream.busiest_thread({}, after) == (0, 0)
