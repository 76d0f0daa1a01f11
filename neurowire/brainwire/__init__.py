"""A drop-in for the `brainwire` package: switch with one import.

    from neurowire.brainwire import encode, decode
    blob = encode.compress("recording.wav")          # lossless: ./encode's bytes
    rate, samples = decode.decompress(blob)           # samples: the WAV's, int16 (1-D if mono)
    small = encode.compress("recording.wav", spikes=True)
    rate, spikes = decode.decompress(small)           # the input's length: raw samples inside
                                                      # detected spikes, zero elsewhere

decompress returns a `Recording` named (rate, samples), in brainwire's order; read it by
name (`recording.rate`, `recording.samples`) where the order could be in doubt.
"""
from . import decode, encode
from ._format import Recording

__all__ = ["Recording", "decode", "encode"]
