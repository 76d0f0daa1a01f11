"""neurowire.feeds: what to send when the lossless stream does not fit the link.

detect   causal spike detection (offline == streaming), spike-band power
spikes   the spike feed's messages: events with lossless snippets (msgpack + codec)
"""
from .detect import DetectorConfig, Events, PowerBins, SpikeDetector, detect

__all__ = ["DetectorConfig", "Events", "PowerBins", "SpikeDetector", "detect"]
