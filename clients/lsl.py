"""Decoded blocks to a Lab Streaming Layer outlet (pylsl), for `neurowire subscribe --lsl NAME`.

    outlet = LslWriter("implant1")           # the outlet appears with the first block
    for block in neurowire.subscribe(...):   # clients.subscribe.Block: first_sample, samples, rate
        outlet.write(block)
    outlet.close()

One int16 channel per electrode at the stream's nominal rate.  Time stamps come from the
sample index, not from when a block arrived: the newest sample of the first block is stamped
with LSL's clock at that moment, and sample i with that stamp + (i - its index) / rate.  So
time stamps are evenly spaced, blocks that arrive late keep their true times, and samples
lost upstream (the block's gaps) leave a hole of exactly their duration in the time axis
rather than being stamped as if they had never existed.  The stream's description carries
the channel labels and the stamp of sample 0, so an LSL consumer can turn stamps back into
sample indices.
"""
from __future__ import annotations

import numpy as np

# liblsl reads its configuration once, at its first call: stream discovery kept to this
# machine. liblsl still binds the outlet's data and time servers to every interface
# (ListenAddress covers multicast only), so an outlet is reachable from the lab network, as
# LSL intends; the README's threat model says so.
LOOPBACK_CONFIG = """
[multicast]
ResolveScope = machine
ListenAddress = 127.0.0.1
[ports]
IPv6 = disable
"""
_configured = False


def configure_loopback() -> None:
    """Keep this process's LSL on loopback; call before anything else touches pylsl (a
    second call, or one after liblsl has loaded its configuration, changes nothing)."""
    global _configured
    if not _configured:
        import pylsl

        pylsl.set_config_content(LOOPBACK_CONFIG)
        _configured = True


class LslWriter:
    def __init__(self, name: str, *, stream_type: str = "ExG", source_id: str | None = None,
                 chunk_size: int = 0, max_buffered_s: int = 360, loopback: bool = True):
        if not name:
            raise ValueError("an LSL outlet needs a name")
        self.name = name
        self.stream_type = stream_type
        self.source_id = source_id
        self.chunk_size = chunk_size
        self.max_buffered_s = max_buffered_s
        self.outlet = None
        self.channels: int | None = None
        self.rate: float | None = None
        self.stamp_of_sample_0: float | None = None
        self.samples_pushed = 0
        if loopback:
            configure_loopback()

    def _open(self, block) -> None:
        import pylsl

        self.channels = int(block.samples.shape[1])
        self.rate = float(block.rate)
        info = pylsl.StreamInfo(self.name, self.stream_type, self.channels, self.rate,
                                pylsl.cf_int16, self.source_id or f"neurowire-{block.stream}")
        description = info.desc()
        description.append_child_value("manufacturer", "neurowire")
        channels = description.append_child("channels")
        for index in range(self.channels):
            channel = channels.append_child("channel")
            channel.append_child_value("label", f"ch{index:04d}")
            channel.append_child_value("unit", "ADC code")
            channel.append_child_value("type", self.stream_type)
        newest = block.first_sample + block.samples.shape[0] - 1
        self.stamp_of_sample_0 = pylsl.local_clock() - newest / self.rate
        acquisition = description.append_child("acquisition")
        acquisition.append_child_value("neurowire_stream", str(block.stream))
        acquisition.append_child_value("stamp_of_sample_0", repr(self.stamp_of_sample_0))
        self.outlet = pylsl.StreamOutlet(info, self.chunk_size, self.max_buffered_s)

    def stamps(self, first_sample: int, count: int) -> np.ndarray:
        """LSL time stamps of samples first_sample .. first_sample + count - 1."""
        return self.stamp_of_sample_0 + (first_sample + np.arange(count)) / self.rate

    def write(self, block) -> None:
        samples = block.samples
        if self.outlet is None:
            self._open(block)
        elif samples.shape[1] != self.channels or float(block.rate) != self.rate:
            raise ValueError(f"block of {samples.shape[1]} channels at {block.rate} Hz on an "
                             f"LSL outlet of {self.channels} at {self.rate} Hz")
        if not samples.shape[0]:
            return
        stamps = self.stamps(block.first_sample, samples.shape[0])
        self.outlet.push_chunk(np.ascontiguousarray(samples, dtype=np.int16), stamps.tolist())
        self.samples_pushed += samples.shape[0]

    def close(self) -> None:
        if self.outlet is not None:
            del self.outlet  # liblsl unlinks the outlet when its last reference goes
            self.outlet = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class LslOutlets:
    """One LslWriter per stream, for `neurowire subscribe --lsl NAME`: the outlet is called
    NAME when the subscription names exactly one stream, else NAME-<stream id>, so several
    implants on one daemon stay apart in LSL."""

    def __init__(self, name: str, *, single_stream: bool):
        if not name:
            raise ValueError("an LSL outlet needs a name")
        self.name = name
        self.single_stream = single_stream
        self.writers: dict[str, LslWriter] = {}

    def write(self, block) -> None:
        writer = self.writers.get(block.stream)
        if writer is None:
            name = self.name if self.single_stream else f"{self.name}-{block.stream}"
            writer = self.writers[block.stream] = LslWriter(
                name, source_id=f"neurowire-{block.stream}")
        writer.write(block)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
