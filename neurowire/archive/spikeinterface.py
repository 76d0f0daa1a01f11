"""A SpikeInterface recording extractor for neurowire stores (`neurowire compress` output).

    from neurowire.archive.spikeinterface import read_neurowire
    recording = read_neurowire("recordings.zarr")       # a spikeinterface BaseRecording
    recording.get_traces(start_frame=0, end_frame=1000)  # int16 (n, channels), decoded lazily

Needs the store's `sample_rate` attribute (every input at one rate). Channel ids and gains
(Open Ephys' bit_volts, when the inputs gave them in uV) come from the attributes. Past a
shorter file's end the traces hold the store's fill value; `lengths` says where each ends.
Format 2 stores open with zarr 2 (beside SpikeInterface releases that hold zarr below 3),
format 3 stores need zarr 3.
"""
from __future__ import annotations

import numpy as np
from spikeinterface.core import BaseRecording, BaseRecordingSegment

import neurowire.archive  # noqa: F401  (registers the codec where entry points are not read)

ARRAY_NAME = "samples"


class NeurowireRecordingExtractor(BaseRecording):
    extractor_name = "Neurowire"
    mode = "folder"
    name = "neurowire"

    def __init__(self, store: str):
        import zarr

        try:
            import neurowire.archive.zarr3  # noqa: F401  (format 3 stores, under zarr 3)
        except ImportError:
            pass
        group = zarr.open_group(str(store), mode="r")
        if ARRAY_NAME not in group:
            raise ValueError(f"{store}: no {ARRAY_NAME} array (an unfinished neurowire store "
                             "holds samples.unfinished: run neurowire compress again)")
        samples = group[ARRAY_NAME]
        attrs = samples.attrs
        if "sample_rate" not in attrs:
            raise ValueError(f"{store}: no sample_rate attribute (inputs at several rates, "
                             "or a store written before neurowire recorded rates)")
        channels = samples.shape[1]
        ids = list(attrs.get("channel_ids") or range(channels))
        BaseRecording.__init__(self, sampling_frequency=float(attrs["sample_rate"]),
                               channel_ids=ids, dtype=np.int16)
        gain = attrs.get("gain") or []
        if attrs.get("gain_units") == "uV" and len(gain) == channels and None not in gain:
            self.set_channel_gains(gain)
            self.set_channel_offsets(0.0)
        self.add_recording_segment(_NeurowireSegment(samples, self.sampling_frequency))
        self._kwargs = {"store": str(store)}


class _NeurowireSegment(BaseRecordingSegment):
    def __init__(self, samples, rate: float):
        BaseRecordingSegment.__init__(self, sampling_frequency=rate)
        self.samples = samples

    def get_num_samples(self) -> int:
        return int(self.samples.shape[0])

    def get_traces(self, start_frame=None, end_frame=None, channel_indices=None) -> np.ndarray:
        traces = self.samples[start_frame:end_frame]
        return traces if channel_indices is None else traces[:, channel_indices]


def read_neurowire(store: str) -> NeurowireRecordingExtractor:
    return NeurowireRecordingExtractor(store)
