"""Bits per second of each feed for a 1024-channel implant, against a link budget.

    python -m neurowire.feeds.bandwidth                   # challenge recordings, cycled
    neurowire bench feeds --synthetic --seconds 2 --json

Channels are built by cycling the recordings (channel i = recording i mod count, all cut to
the shortest), so the spike rate is the recordings' own.  Every feed is produced by the code
that serves it, fed packet by packet as the daemon would, and measured in the bytes it would
put on the wire: codec blocks for lossless, msgpack messages for the others.
"""

from __future__ import annotations

import argparse
import errno
import glob
import json
import os
import sys
import time

import numpy as np

from neurowire import options
from neurowire.options import bounded

from .detect import DetectorConfig
from .spikes import SpikeFeedEncoder, without_snippets



def default_data_dir() -> str:
    """The challenge recordings beside the clone, else the excerpts bundled with the tests."""
    from neurowire.codec.bench import find_recordings

    paths, _ = find_recordings()
    return os.path.dirname(paths[0])


def load_channels(data_dir, channels: int, seconds: float | None, offset: int = 0):
    """(int16 (n, channels), rate, recordings used) by cycling the directory's WAV files."""
    from neurowire.brainwire._format import wav_samples

    paths = sorted(glob.glob(os.path.join(os.fspath(data_dir), "*.wav")))
    if not paths:
        # With the folder as filename, a command says it in one line (neurowire/cli.py).
        raise FileNotFoundError(errno.ENOENT, "no .wav recordings in it", os.fspath(data_dir))
    paths = paths[offset:] + paths[:offset]
    recordings, rates = [], set()
    for path in paths[:channels]:
        samples, rate = wav_samples(path)
        recordings.append(samples[:, 0])
        rates.add(rate)
    if len(rates) != 1:
        raise ValueError(f"recordings at several rates: {sorted(rates)}")
    rate = rates.pop()
    n = min(len(r) for r in recordings)
    if seconds:
        n = min(n, int(round(seconds * rate)))
    data = np.empty((n, channels), np.int16)
    for channel in range(channels):
        data[:, channel] = recordings[channel % len(recordings)][:n]
    return data, float(rate), len(recordings)


def synthetic_channels(channels: int, seconds: float, rate: float = 20000.0, seed: int = 1):
    from neurowire.clients.synth import synthesize

    return synthesize(channels, rate, int(round(seconds * rate)), seed), rate


def measure(data: np.ndarray, rate: float, *, block: int = 10, config: DetectorConfig | None = None,
            batch_ms: float = 20.0, keyframe_s: float = 1.0, link_bps: float = 1e6,
            lossless: bool = True, bounded=()) -> dict:
    """Feed `data` (n, channels) packet by packet through every feed; bits/s of each."""
    from neurowire.codec import StreamEncoder

    config = config or DetectorConfig(power_bin_ms=20.0)
    if config.power_bin_ms <= 0:
        raise ValueError("the power feed needs power_bin_ms > 0")
    n, channels = data.shape
    seconds = n / rate
    encoder = SpikeFeedEncoder(channels, rate, config, batch_ms=batch_ms)
    lossless_bytes = 0
    codec = StreamEncoder(channels) if lossless else None
    keyframe_every = max(1, int(round(keyframe_s * rate)))
    next_key = 0
    events_only_bytes = 0
    spike_seconds = lossless_seconds = 0.0
    # The daemon's bounded feed: one message per packet here, the most it ever sends (it
    # joins packets that wait together), so these figures are an upper bound.
    from .spikes import BoundedEncoder

    bounded_encoders = {k: BoundedEncoder(channels, rate, k, keyframe_s=keyframe_s)
                        for k in bounded}
    bounded_bytes = dict.fromkeys(bounded, 0)
    for start in range(0, n, block):
        packet = data[start:start + block]
        if codec is not None:
            began = time.thread_time()
            key = start >= next_key
            if key:
                next_key = start + keyframe_every
            lossless_bytes += len(codec.encode(packet, keyframe=key))
            lossless_seconds += time.thread_time() - began
        for k, bounded_encoder in bounded_encoders.items():
            bounded_bytes[k] += len(bounded_encoder.encode(start, packet))
        began = time.thread_time()
        tagged = encoder.feed_tagged(packet)
        spike_seconds += time.thread_time() - began
        for kind, message in tagged:
            if kind == "spikes":
                events_only_bytes += len(without_snippets(message))
    geometry = encoder.detector.geometry
    covered = encoder.covered / rate  # spike messages cover crossings up to here
    raw_bps = channels * rate * 16

    def row(name, total_bytes, span, what):
        bps = 8 * total_bytes / span if span > 0 else 0.0
        return {"feed": name, "bits_per_s": bps, "ratio_vs_raw": raw_bps / bps if bps else None,
                "link_fraction": bps / link_bps, "fits_link": bps <= link_bps, "keeps": what}

    feeds = [row("raw int16", n * channels * 2, seconds, "every sample, 16 bits"),
             row("raw 10-bit", n * channels * 10 / 8, seconds, "every sample, 10 bits packed")]
    if codec is not None:
        feeds.append(row(f"lossless (codec, {block}-sample blocks)", lossless_bytes, seconds,
                         "every sample, exactly"))
    for k in bounded:
        feeds.append(row(f"bounded k={k} (codec, {block}-sample messages)", bounded_bytes[k],
                         seconds, f"every sample, each within {k} ADC codes"))
    feeds += [
        row("spikes: events + snippets", encoder.bytes_spikes, covered,
            f"channel, sample index and {geometry.length} original samples per event"),
        row("spikes: events only", events_only_bytes, covered, "channel and sample index"),
        row(f"spike-band power ({config.power_bin_ms:g} ms bins)", encoder.bytes_power,
            encoder.power_seq * geometry.power_bin / rate if encoder.power_seq else seconds,
            "mean squared band-passed signal per channel per bin, 1/8-octave steps, codec-coded")]
    events = encoder.events
    per_event = 8 * encoder.bytes_spikes / events if events else None
    return {
        "channels": channels, "rate": rate, "seconds": seconds, "block_samples": block,
        "link_bps": link_bps, "feeds": feeds,
        "spike_rate": {"events": events, "events_per_s": events / covered if covered else 0.0,
                       "per_channel_hz": events / covered / channels if covered else 0.0,
                       "threshold": config.threshold, "snippet_samples": geometry.length,
                       "pre_samples": geometry.pre,
                       # all-in (headers shared out): the rate at which the feed fills the link
                       "bits_per_event": per_event,
                       "link_full_at_hz_per_channel":
                           link_bps / per_event / channels if per_event else None},
        "cpu_us_per_packet": {
            "spike_feed": 1e6 * spike_seconds / max(1, -(-n // block)),
            **({"lossless": 1e6 * lossless_seconds / max(1, -(-n // block))} if codec else {})},
        "packet_period_us": 1e6 * block / rate,
        "detector": config.to_dict(), "batch_ms": batch_ms,
    }


def spike_rate_by_channel(data: np.ndarray, rate: float, config: DetectorConfig | None = None):
    from .detect import detect

    events = detect(data, rate, config)
    return np.bincount(events.channel, minlength=data.shape[1]) / (data.shape[0] / rate)


def markdown(result: dict) -> str:
    link = result["link_bps"]
    lines = [f"{result['channels']} channels at {result['rate']:g} Hz, "
             f"{result['seconds']:.2f} s, link {link / 1e6:g} Mbps",
             "", "| feed | kbit/s | vs raw int16 | of link | fits | keeps |",
             "|---|---:|---:|---:|:---:|---|"]
    for feed in result["feeds"]:
        ratio = f"{feed['ratio_vs_raw']:.1f}x" if feed["ratio_vs_raw"] else "-"
        lines.append(f"| {feed['feed']} | {feed['bits_per_s'] / 1e3:,.1f} | {ratio} | "
                     f"{100 * feed['link_fraction']:.1f}% | "
                     f"{'yes' if feed['fits_link'] else 'no'} | {feed['keeps']} |")
    spikes = result["spike_rate"]
    cpu = result["cpu_us_per_packet"]
    lines += ["", "CPU is thread time (not wall clock: the machine may be shared).",
              f"Spike rate observed: {spikes['events_per_s']:,.0f} events/s over all "
              f"channels, {spikes['per_channel_hz']:.2f} Hz per channel (threshold "
              f"{spikes['threshold']:g} x standard sigma, {spikes['snippet_samples']}-sample "
              f"snippets); {spikes['bits_per_event'] or 0:.0f} bits per event all-in, so "
              f"the snippet feed fills the link at "
              f"{spikes['link_full_at_hz_per_channel'] or 0:.2f} Hz per channel.",
              "CPU per packet of " f"{result['block_samples']} samples: "
              + ", ".join(f"{k} {v:.0f} us" for k, v in cpu.items())
              + f" (packet period {result['packet_period_us']:.0f} us)."]
    reference = result.get("reference")
    if reference:
        lines += ["", reference_markdown(reference)]
    return "\n".join(lines)


def reference_markdown(r: dict) -> str:
    text = (f"Detector against the offline reference (zero-phase Butterworth 300-6000 Hz, "
            f"MAD sigma, +-{r['tolerance_ms']:g} ms), threshold {r['threshold']:g}, "
            f"{r['recordings']} recordings: kept {r['kept']:.3f} of {r['clear_spikes']:,} "
            f"clear spikes (beyond {r['clear_sigma']:g} sigma; median per recording "
            f"{r['kept_median_per_recording']:.3f}); {r['real']:.3f} of {r['events']:,} "
            f"events real (on a reference event beyond {r['real_sigma']:g} sigma).")
    if r["degenerate"]:
        text += (f" Not scored, reference noise under one ADC code: "
                 + ", ".join(os.path.basename(p) for p in r["degenerate"]) + ".")
    return text


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Bits/s of the lossless, spike and spike-band power feeds for a "
                          "1024-channel implant, against a link budget.")
    parser.add_argument("--data", type=options.path, default=None,
                        help="directory of one-electrode WAV recordings, cycled over channels "
                             "(default: the challenge set beside the clone, else the bundled "
                             "excerpts)")
    parser.add_argument("--synthetic", action="store_true",
                        help="use the simulator's synthetic signal instead of recordings")
    parser.add_argument("--channels", type=options.channels, default=1024)
    parser.add_argument("--seconds", type=bounded(float, 0, 86400, what="the duration"), default=0.0,
                        help="use at most this much of each recording (0: all; synthetic: 2)")
    parser.add_argument("--block", type=bounded(int, 1, 4096, what="samples per packet"), default=10, help="samples per packet")
    parser.add_argument("--threshold", type=bounded(float, 0, 1000, low_open=True, what="the threshold"), default=DetectorConfig.threshold)
    parser.add_argument("--snippet-ms", type=bounded(float, 0, 1000, low_open=True, what="the snippet"), default=DetectorConfig.snippet_ms)
    parser.add_argument("--power-bin-ms", type=bounded(float, 0, 60_000, low_open=True, what="the power bin"), default=20.0)
    parser.add_argument("--batch-ms", type=bounded(float, 0, 60_000, low_open=True, what="the batch"), default=20.0,
                        help="spike messages cover this much time each")
    parser.add_argument("--link-mbps", type=bounded(float, 0, 1e6, low_open=True, what="the link capacity"), default=1.0)
    parser.add_argument("--no-lossless", action="store_true", help="skip the codec (faster)")
    parser.add_argument("--bounded", type=bounded(int, 1, 63, what="max_error"), nargs="*", default=[], metavar="K",
                        help="add the daemon's bounded feed for these max_error values")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip scoring the detector against the offline reference")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.data is None and not args.synthetic:
        args.data = default_data_dir()
    if args.synthetic:
        data, rate = synthetic_channels(args.channels, args.seconds or 2.0)
        source = "synthetic"
    else:
        data, rate, count = load_channels(args.data, args.channels, args.seconds or None)
        source = f"{count} recordings from {args.data}, cycled"
    config = DetectorConfig(threshold=args.threshold, snippet_ms=args.snippet_ms,
                            power_bin_ms=args.power_bin_ms)
    result = measure(data, rate, block=args.block, config=config, batch_ms=args.batch_ms,
                     link_bps=args.link_mbps * 1e6, lossless=not args.no_lossless,
                     bounded=tuple(args.bounded))
    result["source"] = source
    if not args.synthetic and not args.no_reference:
        import importlib.util

        if importlib.util.find_spec("scipy") is None:
            print("scipy is not installed (pip install neurowire[bench]): the detector is "
                  "not scored against the reference", file=sys.stderr)
            args.no_reference = True
    if not args.synthetic and not args.no_reference:
        from .reference import score_recordings

        paths = sorted(glob.glob(os.path.join(args.data, "*.wav")))
        result["reference"] = score_recordings(paths, config)
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
    else:
        print(f"Source: {source}\n")
        print(markdown(result))
    return 0


def main(argv=None) -> int:
    parser = configure_parser(argparse.ArgumentParser(prog="python -m neurowire.feeds.bandwidth"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
