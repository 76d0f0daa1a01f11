"""Raw int16 inputs (flat .dat/.bin, Open Ephys structure.oebin, SpikeGLX .meta) and the
attributes that let a store stand alone: rate, channel ids, gain, true lengths, xarray
dimensions in both zarr formats."""
import json
import os

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from neurowire import cli  # noqa: E402
from neurowire.archive.batch import ARRAY_NAME, compress, decompress  # noqa: E402
from neurowire.archive.sources import InputError, RawLayout  # noqa: E402
from test_archive_codec import grid_signal  # noqa: E402

SMALL = dict(chunk_samples=4096, chunk_channels=3, dask="off", progress=False)


def assert_restored(originals, back):
    for path in originals:
        name = os.path.basename(path)
        assert (back / name).read_bytes() == open(path, "rb").read(), name


def open_ephys_recording(root, streams):
    """An Open Ephys binary-format recording: structure.oebin (the fields the format
    documents for continuous streams) and continuous/<folder>/continuous.dat."""
    described = []
    for folder, samples, rate in streams:
        channels = samples.shape[1]
        (root / "continuous" / folder).mkdir(parents=True)
        (root / "continuous" / folder / "continuous.dat").write_bytes(samples.astype("<i2").tobytes())
        described.append({
            "folder_name": folder + "/", "sample_rate": rate, "source_processor_name": "Acq",
            "source_processor_id": 100, "stream_name": folder, "num_channels": channels,
            "channels": [{"channel_name": f"CH{i + 1}", "description": "headstage channel",
                          "identifier": "genericdata.continuous", "history": "Acq",
                          "bit_volts": 0.195, "units": "uV", "source_processor_index": i,
                          "recorded_processor_index": i} for i in range(channels)]})
    (root / "structure.oebin").write_text(json.dumps(
        {"GUI version": "0.6.7", "continuous": described, "events": [], "spikes": []}))
    return root


def spikeglx_run(folder, stem, samples, rate):
    """A SpikeGLX .bin and its .meta (key=value lines, as SpikeGLX writes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = samples.astype("<i2").tobytes()
    (folder / f"{stem}.bin").write_bytes(data)
    (folder / f"{stem}.meta").write_text(
        f"acqApLfSy=384,0,1\nappVersion=20230905\nfileSizeBytes={len(data)}\n"
        f"imAiRangeMax=0.6\nimAiRangeMin=-0.6\nimMaxInt=512\nimSampRate={rate}\n"
        f"nSavedChans={samples.shape[1]}\nsnsSaveChanSubset=all\ntypeThis=imec\n"
        f"~snsChanMap=(384,0,1)(AP0;0:0)\n")
    return folder / f"{stem}.bin"


def test_flat_dat_needs_and_takes_channels_and_rate(tmp_path, capsys):
    samples = grid_signal(5000, 4, seed=1)
    raw = tmp_path / "in" / "intan.dat"
    raw.parent.mkdir()
    raw.write_bytes(samples.astype("<i2").tobytes() + b"\x07")  # a stray byte at the end
    store = tmp_path / "s.zarr"
    assert cli.main(["compress", str(raw), "-o", str(store), "-q"]) == 1
    assert "--channels N and --rate R" in capsys.readouterr().err
    assert cli.main(["compress", str(raw), "-o", str(store), "-q", "--channels", "4",
                     "--rate", "30000"]) == 0
    z = zarr.open_group(str(store), mode="r")[ARRAY_NAME]
    np.testing.assert_array_equal(z[:], samples)
    assert z.attrs["sample_rate"] == 30000
    assert z.attrs["channel_ids"] == [f"intan.dat:{i}" for i in range(4)]
    assert z.attrs["lengths"] == [5000] * 4 and z.attrs["gain"] == [None] * 4
    back = tmp_path / "back"
    assert cli.main(["decompress", str(store), "-o", str(back), "-q"]) == 0
    assert_restored([raw], back)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_open_ephys_recording(tmp_path, zarr_format):
    recording = open_ephys_recording(tmp_path / "Record Node 101" / "experiment1" / "recording1", [
        ("Acquisition_Board-100.Rhythm Data", grid_signal(6000, 3, seed=2), 30000.0),
        ("NI-DAQmx-102.PXI-6255", grid_signal(1500, 2, seed=3), 30000.0)])
    store = tmp_path / "oe.zarr"
    summary = compress([str(recording)], str(store), zarr_format=zarr_format, **SMALL)
    assert summary.files == 2
    z = zarr.open_group(str(store), mode="r")[ARRAY_NAME]
    assert z.attrs["sample_rate"] == 30000.0
    assert z.attrs["channel_ids"] == ["CH1", "CH2", "CH3", "CH1", "CH2"]
    assert z.attrs["gain"] == [0.195] * 5 and z.attrs["gain_units"] == "uV"
    # True lengths, and nothing but zarr's fill value past the shorter stream's end.
    assert z.attrs["lengths"] == [6000] * 3 + [1500] * 2
    assert (z[1500:, 3:] == z.fill_value).all()
    if zarr_format == 2:
        assert z.attrs["_ARRAY_DIMENSIONS"] == ["time", "channel"]
    else:
        assert list(z.metadata.dimension_names) == ["time", "channel"]
    back = tmp_path / "back"
    decompress(str(store), str(back), progress=False)
    assert sorted(os.listdir(back)) == sorted(
        ["Acquisition_Board-100.Rhythm Data.continuous.dat", "NI-DAQmx-102.PXI-6255.continuous.dat"])
    for name in os.listdir(back):
        folder = name[:-len(".continuous.dat")]
        assert (back / name).read_bytes() == \
            (recording / "continuous" / folder / "continuous.dat").read_bytes()
    # The .dat alone finds its structure.oebin; a contradicting --channels is refused.
    dat = recording / "continuous" / "NI-DAQmx-102.PXI-6255" / "continuous.dat"
    compress([str(dat)], str(tmp_path / "one.zarr"), **SMALL)
    with pytest.raises(InputError, match="--channels 4 but the open-ephys metadata says 2"):
        compress([str(dat)], str(tmp_path / "bad.zarr"), layout=RawLayout(channels=4), **SMALL)


def test_spikeglx_meta(tmp_path):
    samples = grid_signal(4000, 5, seed=4)
    binary = spikeglx_run(tmp_path / "run_g0", "run_g0_t0.imec0.ap", samples, 30000)
    store = tmp_path / "sg.zarr"
    compress([str(binary)], str(store), **SMALL)
    group = zarr.open_group(str(store), mode="r")
    assert group[ARRAY_NAME].attrs["sample_rate"] == 30000.0
    (entry,) = group.attrs["neurowire_archive"]["files"]
    assert entry["origin"] == "spikeglx" and entry["meta"]["typeThis"] == "imec"
    np.testing.assert_array_equal(group[ARRAY_NAME][:], samples)
    decompress(str(store), str(tmp_path / "back"), progress=False)
    assert_restored([binary], tmp_path / "back")
    (tmp_path / "run_g0" / "run_g0_t0.imec0.ap.meta").write_text("typeThis=imec\n")
    with pytest.raises(InputError, match="nSavedChans"):
        compress([str(binary)], str(tmp_path / "bad.zarr"), overwrite=True, **SMALL)


def test_wav_rates_and_mixed_rates(tmp_path):
    from test_archive_cli import make_wav

    d = tmp_path / "in"
    d.mkdir()
    (d / "a.wav").write_bytes(make_wav(grid_signal(3000, 1, seed=5), rate=19531))
    (d / "b.wav").write_bytes(make_wav(grid_signal(2000, 1, seed=6), rate=19531))
    compress([str(d)], str(tmp_path / "same.zarr"), **SMALL)
    z = zarr.open_group(str(tmp_path / "same.zarr"), mode="r")[ARRAY_NAME]
    assert z.attrs["sample_rate"] == 19531 and z.attrs["lengths"] == [3000, 2000]
    (d / "c.wav").write_bytes(make_wav(grid_signal(1000, 1, seed=7), rate=30000))
    compress([str(d)], str(tmp_path / "mixed.zarr"), **SMALL)
    group = zarr.open_group(str(tmp_path / "mixed.zarr"), mode="r")
    assert "sample_rate" not in group[ARRAY_NAME].attrs  # per file, in the manifest
    assert [f["rate"] for f in group.attrs["neurowire_archive"]["files"]] == [19531, 19531, 30000]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_xarray_opens_both_formats(tmp_path, zarr_format):
    xarray = pytest.importorskip("xarray")
    raw = tmp_path / "x.dat"
    raw.write_bytes(grid_signal(3000, 2, seed=8).astype("<i2").tobytes())
    store = tmp_path / "x.zarr"
    compress([str(raw)], str(store), zarr_format=zarr_format,
             layout=RawLayout(channels=2, rate=20000), **SMALL)
    import neurowire.archive.zarr3  # noqa: F401

    dataset = xarray.open_zarr(str(store), consolidated=False)
    assert dataset[ARRAY_NAME].dims == ("time", "channel")
    assert dataset[ARRAY_NAME].attrs["sample_rate"] == 20000
