"""Binary graph cuts on images: contrast-sensitive smoothness and an s-t min cut on a pixel region.

Only the undecided pixels become graph nodes: pixels fixed to foreground or background enter as
terminal links of their free neighbours, so a cut in a thin band around an outline costs as
much as the band, not as much as its bounding box.
"""

from __future__ import annotations

import maxflow
import numpy as np

from ._masks import bounding_box, box_slices

__all__ = ["DIRECTIONS", "cut"]

#: forward half of the 8-neighbourhood; each undirected edge appears once
DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _pair_slices(h: int, w: int, dr: int, dc: int):
    """Slices (p, q) so that ``a[p]`` and ``a[q]`` are the two ends of every edge (dr, dc)."""
    p = (slice(0, h - dr), slice(0, w - dc) if dc >= 0 else slice(-dc, w))
    q = (slice(dr, h), slice(dc, w) if dc >= 0 else slice(0, w + dc))
    return p, q


def _contrast(image: np.ndarray, p, q, sel) -> np.ndarray:
    # over the whole window, then selected: contiguous arithmetic is ~7x faster than
    # gathering both ends of the selected edges first (same values)
    diff = image[p] - image[q]
    return np.einsum("...c,...c->...", diff, diff)[sel]


def cut(u_fg: np.ndarray, u_bg: np.ndarray, image: np.ndarray, smooth: float,
        free: np.ndarray) -> np.ndarray:
    """Minimise ``sum u(x_p) + sum w_pq [x_p != x_q]`` over the ``free`` pixels.

    The smoothness weights are contrast-sensitive, ``w_pq = smooth exp(-beta |I_p - I_q|^2) /
    |p - q|`` over the 8-neighbourhood, with ``beta = 1 / (2 <|I_p - I_q|^2>)`` (mean over the
    edges that touch free pixels), so the cut follows image edges.

    Parameters
    ----------
    u_fg, u_bg : (H, W) float arrays
        Cost of labelling each pixel foreground / background.
    image : (H, W, C) float32
    smooth : float
        Weight of the smoothness term.
    free : (H, W) bool
        Pixels to decide; the others keep ``u_fg < u_bg``.

    Returns
    -------
    (H, W) bool foreground.

    References
    ----------
    Boykov & Jolly (2001) "Interactive graph cuts"; Rother et al. (2004) "GrabCut".
    """
    fixed_fg = ~free & (u_fg < u_bg)
    out = fixed_fg.copy()
    # only the bounding box of the free pixels (plus their neighbours) takes part in the cut
    box = bounding_box(free, 1)
    if box is None:
        return out
    win = box_slices(box)
    out[win] = _cut_window(u_fg[win], u_bg[win], image[win], smooth, free[win], fixed_fg[win])
    return out


def _cut_window(u_fg: np.ndarray, u_bg: np.ndarray, image: np.ndarray, smooth: float,
                free: np.ndarray, fixed_fg: np.ndarray) -> np.ndarray:
    h, w = u_fg.shape
    out = fixed_fg.copy()
    n = int(free.sum())
    idx = np.full((h, w), -1, np.int64)
    idx[free] = np.arange(n)
    m = np.minimum(u_fg[free], u_bg[free])
    src = (u_bg[free] - m).astype(np.float64)  # paid when the pixel ends background
    snk = (u_fg[free] - m).astype(np.float64)  # paid when the pixel ends foreground
    edges = []
    for dr, dc in DIRECTIONS:
        p, q = _pair_slices(h, w, dr, dc)
        fp, fq = free[p], free[q]
        touch = fp | fq
        edges.append((dr, dc, p, q, fp[touch], fq[touch], touch, _contrast(image, p, q, touch)))
    mean = np.mean(np.concatenate([e[-1] for e in edges])) if edges else 0.0
    beta = 1.0 / (2.0 * max(float(mean), 1e-8))
    g = maxflow.Graph[float](n, 4 * n)
    nodes = g.add_nodes(n)
    for dr, dc, p, q, fp, fq, touch, d2 in edges:
        wgt = (smooth / np.hypot(dr, dc)) * np.exp(-beta * d2)
        ip, iq = idx[p][touch], idx[q][touch]
        both = fp & fq
        if both.any():
            g.add_edges(nodes[ip[both]], nodes[iq[both]], wgt[both], wgt[both])
        for f_a, i_a, other_fg in ((fp & ~fq, ip, fixed_fg[q][touch]), (fq & ~fp, iq, fixed_fg[p][touch])):
            if not f_a.any():
                continue
            ids, wv, ofg = i_a[f_a], wgt[f_a], other_fg[f_a]
            np.add.at(src, ids[ofg], wv[ofg])      # neighbour is foreground: background costs w
            np.add.at(snk, ids[~ofg], wv[~ofg])    # neighbour is background: foreground costs w
    g.add_grid_tedges(nodes, src, snk)
    g.maxflow()
    seg = g.get_grid_segments(nodes)  # True = sink side = background
    out[free] = ~seg
    return out
