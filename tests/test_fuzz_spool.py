"""Replays the spooling loop's committed fuzz corpus (clients/fuzz/corpus) through its fuzz
target (clients/fuzz/fuzz_spool.c) with a plain main (clients/fuzz/replay.c), under
AddressSanitizer and UBSan: an input that once crashed nw_spool_take stays fixed, without
needing clang's libFuzzer (`make fuzz-spool` runs the fuzzer itself)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FUZZ = REPO / "clients" / "fuzz"
CORPUS = sorted((FUZZ / "corpus").iterdir())


def test_corpus_is_small_and_present():
    assert len(CORPUS) >= 4
    assert all(path.stat().st_size <= 4096 for path in CORPUS)  # make fuzz-spool's -max_len


@pytest.mark.timeout(300)
def test_corpus_replays_clean_under_sanitizers(tmp_path):
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    binary = tmp_path / "fuzz_spool_replay"
    # Under `make asan` the ASan runtime is preloaded; the replay brings its own.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
    sources = [FUZZ / "fuzz_spool.c", FUZZ / "replay.c", REPO / "clients" / "src" / "spool_loop.c",
               REPO / "clients" / "src" / "sub_loop.c"]
    build = subprocess.run(
        [cc, "-g", "-O1", "-std=c99", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=undefined", f"-I{REPO / 'clients' / 'src'}",
         f"-I{REPO / 'codec_c' / 'src'}", "-o", str(binary), *map(str, sources)],
        capture_output=True, text=True, timeout=240, env=env)
    if build.returncode != 0 and "sanitize" in build.stderr:
        pytest.skip(f"{cc} cannot build with sanitizers: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(binary), *map(str, CORPUS)], capture_output=True, text=True,
                         timeout=60, env={**env, "ASAN_OPTIONS": "detect_leaks=0"})
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "runtime error" not in run.stderr
    assert run.stdout.count(" bytes\n") == len(CORPUS)  # every input went through
