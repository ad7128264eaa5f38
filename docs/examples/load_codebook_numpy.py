"""Read a labpcu codebook (its npz twin) and evaluate an operator with numpy alone."""
import json
from pathlib import Path

import numpy as np


def load_codebook(folder):
    """{operator: (attributes, arrays)} from manifest.json and its op-*.npz files."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    if manifest["schema"] != "labpcu-codebook" or manifest["schema_version"] not in (1, 2, 3):
        raise ValueError(f"not a labpcu codebook of version 1, 2 or 3: {folder}")
    return {e["name"]: (e["attrs"], dict(np.load(folder / e["file"]))) for e in manifest["operators"]}


def lookup(table, *xs, mode="mean", rng=None):
    """Interpolate linearly (bilinearly in 2-D) on the grid, inputs clipped to it.
    mode: mean; gaussian (mean + noise_scale·std·N(0,1)); quantile (inverse CDF at U(0,1))."""
    attrs, a = table
    xs = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in xs))
    idx, w = [], []
    for axis, x in zip((a[name] for name in attrs["axis_names"]), xs):
        x = np.clip(x, axis[0], axis[-1])
        i = np.clip(np.searchsorted(axis, x, side="right") - 1, 0, len(axis) - 2)
        idx.append(i), w.append((x - axis[i]) / (axis[i + 1] - axis[i]))

    def interp(get, ix=()):  # along the last axis first, then the earlier ones
        if len(ix) == len(idx):
            return get(ix)
        v0, v1 = interp(get, ix + (idx[len(ix)],)), interp(get, ix + (idx[len(ix)] + 1,))
        return v0 + w[len(ix)] * (v1 - v0)

    rng = np.random.default_rng(rng)
    if mode == "mean":
        return interp(lambda ix: a["mean"][ix])
    if mode == "gaussian":
        z = rng.standard_normal(xs[0].shape)
        return interp(lambda ix: a["mean"][ix]) + interp(lambda ix: a["std"][ix]) * z * attrs["noise_scale"]
    u, levels, q = rng.random(xs[0].shape), a["level"], a["quantiles"]
    k = np.clip(np.searchsorted(levels, u, side="right") - 1, 0, len(levels) - 2)
    f = (u - levels[k]) / (levels[k + 1] - levels[k])
    return interp(lambda ix: q[ix + (k,)] + f * (q[ix + (k + 1,)] - q[ix + (k,)]))


def effective_weight(table, w):
    """VMM (version 3): the weight the crossbar gives for programmed weights w (fractions of full scale)."""
    a = table[1]
    return w * np.interp(np.abs(w), a["effective_weight_requested"], a["effective_weight_gain_mean"])
