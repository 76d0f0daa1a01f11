"""The codec inside zarr: format 2 (numcodecs compressor) and format 3 (array-to-bytes
codec found by name), on disk and back."""

import json

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from neurowire.archive import CODEC_ID, NeurowireCodec  # noqa: E402
from neurowire.archive.zarr3 import NeurowireZarr3Codec  # noqa: E402
from test_archive_codec import grid_signal  # noqa: E402

# Not a multiple of the chunk shape on purpose: edge chunks are padded by zarr.
SHAPE, CHUNKS = (2500, 10), (1024, 4)


def test_zarr_v2_round_trip(tmp_path):
    x = grid_signal(*SHAPE)
    z = zarr.create_array(tmp_path / "v2.zarr", shape=SHAPE, chunks=CHUNKS, dtype="int16",
                          zarr_format=2, compressors=NeurowireCodec(), filters=None)
    z[:] = x
    meta = json.loads((tmp_path / "v2.zarr" / ".zarray").read_text())
    assert meta["compressor"] == {"id": CODEC_ID, "channels": None}
    again = zarr.open_array(tmp_path / "v2.zarr", mode="r")
    np.testing.assert_array_equal(again[:], x)
    np.testing.assert_array_equal(again[100:900, 3:7], x[100:900, 3:7])
    # A chunk file is exactly one numcodecs-encoded chunk.
    blob = (tmp_path / "v2.zarr" / "0.0").read_bytes()
    np.testing.assert_array_equal(NeurowireCodec().decode(blob), x[:1024, :4])


def test_zarr_v3_round_trip(tmp_path):
    x = grid_signal(*SHAPE)
    z = zarr.create_array(tmp_path / "v3.zarr", shape=SHAPE, chunks=CHUNKS, dtype="int16",
                          zarr_format=3, serializer=NeurowireZarr3Codec(), compressors=None)
    z[:] = x
    meta = json.loads((tmp_path / "v3.zarr" / "zarr.json").read_text())
    assert meta["codecs"] == [{"name": CODEC_ID}]
    again = zarr.open_array(tmp_path / "v3.zarr", mode="r")
    np.testing.assert_array_equal(again[:], x)
    np.testing.assert_array_equal(again[1500:, :5], x[1500:, :5])
    # Same chunk bytes as the numcodecs codec: chunks move between formats unchanged.
    blob = (tmp_path / "v3.zarr" / "c" / "0" / "1").read_bytes()
    assert blob == NeurowireCodec().encode(x[:1024, 4:8])


def test_zarr_v3_one_dimensional(tmp_path):
    x = grid_signal(5000, 1)[:, 0]
    z = zarr.create_array(tmp_path / "mono.zarr", shape=x.shape, chunks=(2048,), dtype="int16",
                          serializer=NeurowireZarr3Codec(), compressors=None)
    z[:] = x
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "mono.zarr", mode="r")[:], x)


def test_zarr_v3_codec_metadata():
    codec = NeurowireZarr3Codec.from_dict({"name": CODEC_ID})
    assert codec.to_dict() == {"name": CODEC_ID}
    assert codec == NeurowireZarr3Codec()
    assert zarr.registry.get_codec_class(CODEC_ID) is NeurowireZarr3Codec
    with pytest.raises(ValueError):
        NeurowireZarr3Codec.from_dict({"name": CODEC_ID, "configuration": {"level": 3}})


@pytest.mark.parametrize("dtype", ["float32", "int32", "uint16"])
def test_zarr_v3_rejects_other_dtypes(tmp_path, dtype):
    with pytest.raises(ValueError, match="int16"):
        zarr.create_array(tmp_path / "bad.zarr", shape=(10, 2), chunks=(5, 2), dtype=dtype,
                          serializer=NeurowireZarr3Codec(), compressors=None)


def test_zarr_damaged_chunk_error(tmp_path):
    x = grid_signal(2048, 2)
    z = zarr.create_array(tmp_path / "d.zarr", shape=x.shape, chunks=(1024, 2), dtype="int16",
                          serializer=NeurowireZarr3Codec(), compressors=None)
    z[:] = x
    path = tmp_path / "d.zarr" / "c" / "1" / "0"
    path.write_bytes(path.read_bytes()[:40])
    again = zarr.open_array(tmp_path / "d.zarr", mode="r")
    np.testing.assert_array_equal(again[:1024], x[:1024])
    with pytest.raises(Exception, match="damaged neurowire chunk"):
        again[1024:]


def test_entry_points_open_stores_in_a_fresh_interpreter(tmp_path):
    """With neurowire installed, zarr reads both formats without being told about the
    codec: the numcodecs.codecs and zarr.codecs entry points find it."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    for group in ("numcodecs.codecs", "zarr.codecs"):
        if CODEC_ID not in {e.name for e in entry_points(group=group)}:
            pytest.skip(f"neurowire installed without the {group} entry point (yet)")
    x = grid_signal(3000, 3)
    for fmt, kwargs in ((2, dict(compressors=NeurowireCodec(), filters=None)),
                        (3, dict(serializer=NeurowireZarr3Codec(), compressors=None))):
        z = zarr.create_array(tmp_path / f"e{fmt}.zarr", shape=x.shape, chunks=(1000, 3),
                              dtype="int16", zarr_format=fmt, **kwargs)
        z[:] = x
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, zarr\n"
            "x = np.load(sys.argv[1] + '/x.npy')\n"
            "for fmt in (2, 3):\n"
            "    assert (zarr.open_array(sys.argv[1] + f'/e{fmt}.zarr', mode='r')[:] == x).all()\n"
            )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
