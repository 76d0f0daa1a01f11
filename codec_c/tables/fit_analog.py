"""Fit the analog model's constants (ANALOG_SCALE, ANALOG_SHARE in nw_codec.c) and check
that they generalise, on a folder of recordings.

The codec's own model is built into a probe (a temporary copy of codec_c/src in which the
coder calls a hook instead of mixing) that adds up, per activity context, the ideal code
length of every direct residual under each (scale, share) on a grid. The counts and the
predictor do not depend on the mix, so one pass prices every grid point, and contexts are
independent: each context takes its best point. Cross-validation: fit on the even-indexed
recordings (sorted by name), score on the odd ones, and the reverse; a gain on one half only
is noise. Prints both halves and the constants fitted on all recordings. The shares priced
are fixed ones (file container version 2's model); version 3 starts each channel from them
and learns its own as it goes (analog_learn in nw_model.h).

    python codec_c/tables/fit_analog.py ../shared/data/challenge -j 2
"""
import argparse
import concurrent.futures
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
SCALES = [45, 51, 58, 67, 77, 86, 96, 109, 122, 141, 166, 192, 224, 256]   # Q6
SHARES = [51, 77, 102, 128, 154, 179, 205, 230, 256]                       # /256
CONTEXTS = 12

PROBE = r"""
#include "nw_model.h"
#include <math.h>
#include <stdio.h>
int probe_scale, probe_share;
static const int scales[] = {%(scales)s}, shares[] = {%(shares)s};
#define NSC (int)(sizeof scales / sizeof *scales)
#define NSH (int)(sizeof shares / sizeof *shares)
static double cost[CONTEXTS][NSC][NSH], base[CONTEXTS];
static analog_learning learn;
void probe_hook(const uint16_t *g0, uint32_t lower, uint32_t upper, int ctx, int32_t pred,
                int32_t flip, int64_t pred_q, int32_t activity, int32_t code) {
    int r = flip * (code - pred);
    if (r < -HALF || r >= HALF) return;
    base[ctx] -= log2((double)g0[r + HALF] / (lower + upper));
    for (int a = 0; a < NSC; a++) for (int b = 0; b < NSH; b++) {
        uint16_t g[2 * HALF];
        uint32_t lo = lower, up = upper;
        memcpy(g, g0, sizeof g);
        probe_scale = scales[a]; probe_share = shares[b];
        analog_mix(&learn, ANALOG_FIXED, g, &lo, &up, ctx, ctx, 0, pred, flip, pred_q, activity);
        cost[ctx][a][b] -= log2((double)g[r + HALF] / (lo + up));
    }
}
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "rb");
    fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
    uint8_t *in = malloc(n), *out = malloc(nw_file_bound(n));
    if (fread(in, 1, n, f) != (size_t)n) return 1;
    nw_file_compress(in, n, out, nw_file_bound(n));
    fwrite(base, sizeof base, 1, stdout); fwrite(cost, sizeof cost, 1, stdout);
    return 0;
}
"""


def build_probe(work):
    src = work / "src"
    shutil.copytree(SRC, src)
    model = (src / "nw_model.h").read_text()
    hook = ("        if (pass == PASS_ENCODE && grid_code(*value) >= 0) {\n"
            "        extern void probe_hook(const uint16_t *, uint32_t, uint32_t, int, int32_t, int32_t, int64_t, int32_t, int32_t);\n"
            "        probe_hook(g, lower, upper, ctx, pred, flip, pred_q, s->activity, grid_code(*value));\n    }\n")
    mix = "        analog_mix(co->learn, analog, g, &lower, &upper, ctx, nb, blend, pred, flip, pred_q, s->activity);\n"
    learn = ("    if (analog >= ANALOG_LEARNED && grid && !max_error && symbol < 2 * HALF) "
             "analog_learn(co->learn, ctx, symbol, g[symbol], weighted[symbol]);\n")
    for old, new in [(mix, hook), (learn, ""),
                     ("nw_analog_scale[ctx]", "probe_scale"), ("nw_analog_share[ctx]", "(uint32_t)probe_share")]:
        assert old in model, old
        model = model.replace(old, new)
    model = model.replace("#define NW_MODEL_H\n", "#define NW_MODEL_H\nextern int probe_scale, probe_share;\n", 1)
    (src / "nw_model.h").write_text(model)
    (work / "probe.c").write_text(PROBE % {"scales": ", ".join(map(str, SCALES)),
                                           "shares": ", ".join(map(str, SHARES))})
    subprocess.run(["cc", "-O2", "-std=c99", f"-I{src}", "-o", str(work / "probe"), str(work / "probe.c"),
                    str(src / "nw_codec.c"), str(src / "nw_file.c"), "-lm"], check=True)
    return work / "probe"


def measure(probe, path):
    raw = np.frombuffer(subprocess.run([str(probe), str(path)], check=True, capture_output=True).stdout, np.float64)
    return raw[:CONTEXTS], raw[CONTEXTS:].reshape(CONTEXTS, len(SCALES), len(SHARES))


def fit(costs):
    return [np.unravel_index(np.argmin(c), c.shape) for c in costs]


def gain(base, costs, choice):
    return (base.sum() - sum(costs[k][choice[k]] for k in range(CONTEXTS))) / 8


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="folder of mono 16-bit WAV recordings")
    parser.add_argument("-j", "--jobs", type=int, default=1)
    args = parser.parse_args()
    paths = sorted(pathlib.Path(args.folder).glob("*.wav"))
    with tempfile.TemporaryDirectory() as tmp:
        probe = build_probe(pathlib.Path(tmp))
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda p: measure(probe, p), paths))
    raw_bytes = np.array([p.stat().st_size for p in paths])
    for half in (0, 1):
        train = [r for i, r in enumerate(results) if i % 2 == half]
        test = [r for i, r in enumerate(results) if i % 2 != half]
        choice = fit(sum(c for _, c in train))
        saved = gain(sum(b for b, _ in test), sum(c for _, c in test), choice)
        print(f"fitted on the {'even odd'.split()[half]} half, scored on the other: the direct "
              f"residuals' ideal code shrinks by {saved:.0f} bytes "
              f"({raw_bytes[[i for i in range(len(paths)) if i % 2 != half]].sum()} raw bytes)")
    choice = fit(sum(c for _, c in results))
    print("#define ANALOG_SCALE " + ", ".join(str(SCALES[a]) for a, _ in choice))
    print("#define ANALOG_SHARE " + ", ".join(str(SHARES[b]) for _, b in choice))


if __name__ == "__main__":
    main()
