"""Run inside a fresh venv holding the built wheel with the `spikeinterface` extra (see
tests/test_packaging.py): the C core, the codec in SpikeInterface and NWB-Zarr, and the
neurowire store extractor.  Prints one JSON line of figures; any failure raises.

    python check_spikeinterface.py STORE.zarr WORKDIR WAV...
"""
import json
import os
import sys
import wave
from datetime import datetime, timezone

import numpy as np


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def main(store, workdir, *wavs):
    import numcodecs
    import zarr

    from neurowire import codec
    from neurowire.archive import NeurowireCodec

    columns = []
    for path in wavs:
        with wave.open(path) as w:
            columns.append(np.frombuffer(w.readframes(w.getnframes()), "<i2"))
            rate = w.getframerate()
    n = min(map(len, columns))
    traces = np.stack([c[:n] for c in columns], axis=1).astype(np.int16)
    result = {"zarr": zarr.__version__, "numcodecs": numcodecs.__version__}

    # The compiled core, installed from the wheel.
    assert "site-packages" in codec.__file__, codec.__file__
    encoder, decoder = codec.StreamEncoder(traces.shape[1]), codec.StreamDecoder(traces.shape[1])
    assert np.array_equal(decoder.decode(encoder.encode(traces[:4000], keyframe=True)), traces[:4000])
    assert numcodecs.get_codec({"id": "neurowire"}).__class__ is NeurowireCodec  # entry point

    # SpikeInterface: save(format="zarr", compressor=...) and read back.
    import spikeinterface
    import spikeinterface.core as si

    recording = si.NumpyRecording(traces, sampling_frequency=float(rate))
    ours = recording.save(format="zarr", folder=os.path.join(workdir, "si_neurowire.zarr"),
                          compressor=NeurowireCodec(), verbose=False)
    assert np.array_equal(ours.get_traces(), traces)
    default = recording.save(format="zarr", folder=os.path.join(workdir, "si_default.zarr"),
                             verbose=False)
    result["spikeinterface"] = spikeinterface.__version__
    result["si_ratio_neurowire"] = traces.nbytes / folder_bytes(os.path.join(workdir, "si_neurowire.zarr"))
    result["si_ratio_default"] = traces.nbytes / folder_bytes(os.path.join(workdir, "si_default.zarr"))

    # NWB-Zarr: an ElectricalSeries whose data is coded by neurowire.
    import hdmf_zarr
    from hdmf_zarr import NWBZarrIO, ZarrDataIO
    from pynwb import NWBFile
    from pynwb.ecephys import ElectricalSeries

    nwb = NWBFile(session_description="neurowire check", identifier="neurowire-check",
                  session_start_time=datetime(2026, 1, 1, tzinfo=timezone.utc))
    device = nwb.create_device(name="probe")
    group = nwb.create_electrode_group(name="shank0", description="test", location="unknown",
                                       device=device)
    for _ in range(traces.shape[1]):
        nwb.add_electrode(group=group, location="unknown")
    electrodes = nwb.create_electrode_table_region(list(range(traces.shape[1])), "all")
    nwb.add_acquisition(ElectricalSeries(
        name="raw", electrodes=electrodes, rate=float(rate),
        data=ZarrDataIO(traces, chunks=traces.shape, compressor=NeurowireCodec())))
    path = os.path.join(workdir, "session.nwb.zarr")
    with NWBZarrIO(path, mode="w") as io:
        io.write(nwb)
    with NWBZarrIO(path, mode="r") as io:
        back = io.read().acquisition["raw"]
        assert np.array_equal(back.data[:], traces)
        assert back.data.compressor.codec_id == "neurowire"
    result["hdmf_zarr"] = hdmf_zarr.__version__

    # A store written by `neurowire compress --zarr-format 2`, read as a SpikeInterface recording.
    from neurowire.archive.spikeinterface import read_neurowire

    stored = read_neurowire(store)
    assert stored.get_sampling_frequency() == rate
    assert stored.get_num_channels() == len(wavs)
    assert list(stored.get_channel_ids()) == [os.path.basename(p) for p in wavs]
    lengths = zarr.open_group(store, mode="r")["samples"].attrs["lengths"]
    for i, column in enumerate(columns):
        got = stored.get_traces(start_frame=0, end_frame=lengths[i], channel_ids=[stored.get_channel_ids()[i]])
        assert np.array_equal(got[:, 0], column), i
    middle = stored.get_traces(start_frame=1000, end_frame=1500)
    assert np.array_equal(middle, np.stack([c[1000:1500] for c in columns], axis=1))
    # neurowire compress needs zarr 3, and says so rather than failing somewhere inside.
    from neurowire.archive.batch import ArchiveError, compress

    try:
        compress(list(wavs), os.path.join(workdir, "needs3.zarr"), dask="off", progress=False)
    except ArchiveError as err:
        assert "zarr >= 3.1" in str(err), err
    else:
        raise AssertionError("neurowire compress ran under zarr 2")
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
