"""Robust Sim(3) pose-graph averaging: one similarity per frame from relative similarities per edge.

Each edge e = (i, j) measures M_e = i_S_j (canonical j -> canonical i); unknowns are world_S_k. The solver:
  1. screens edges by rotation cycle consistency over triangles (a wrong loop pair breaks its triangles),
  2. initialises along a maximum-confidence spanning tree that prefers triangle-supported edges,
  3. refines rotations (Gauss-Newton on SO(3)), then log-scales and translations (linear least squares), all
     with Cauchy IRLS weights whose scale follows the median residual,
  4. rejects edges whose rotation or point residual is far above the median and solves again.
Everything is sparse: cost and memory grow with the number of edges, not with pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve

from kd3d_core.alignment.sim3 import (Sim3Array, compose, identity, inverse, project_to_rotation, rot_angle, rot_exp,
                                      rot_log)


@dataclass(frozen=True)
class GraphConfig:
    """Robustness settings of the pose graph (angles in radians, residuals relative to scene depth).

    An edge is screened out when the rotation cycle error of its triangles stays above
    max(triangle_max_error, triangle_factor x the median triangle error) once worse edges are removed (the
    threshold follows the teacher's noise: DUSt3R-level pairs have 2-3 degree cycles, exact ones almost none).
    """

    triangle_max_error: float = np.radians(5.0)
    triangle_factor: float = 3.0
    reject_rot: float = np.radians(3.0)
    reject_point: float = 0.05
    reject_factor: float = 4.0
    iterations: int = 8
    rounds: int = 4


class EdgeSet(NamedTuple):
    """Directed edges with their measured relative similarities and weights."""

    i: np.ndarray
    j: np.ndarray
    M: Sim3Array
    w: np.ndarray


class GraphSolution(NamedTuple):
    """Per-frame world similarities, per-edge inlier flags and residuals, frames reached."""

    S: Sim3Array
    inlier: np.ndarray
    rot_residual: np.ndarray
    point_residual: np.ndarray
    aligned: np.ndarray
    root: int


def _unordered(edges: EdgeSet) -> tuple[dict[tuple[int, int], int], np.ndarray]:
    """Unordered pair -> index, with the chordal mean rotation a_R_b (a < b) of its measurements."""
    keys: dict[tuple[int, int], int] = {}
    sums = []
    for e, (i, j) in enumerate(zip(edges.i.tolist(), edges.j.tolist())):
        key = (min(i, j), max(i, j))
        R = edges.M.R[e] if i < j else edges.M.R[e].T
        if key not in keys:
            keys[key] = len(sums)
            sums.append(np.zeros((3, 3)))
        sums[keys[key]] += R
    return keys, project_to_rotation(np.array(sums).reshape(-1, 3, 3))


def _triangles(n: int, keys: dict[tuple[int, int], int], U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangles of the unordered graph as (T, 3) key indices (ab, bc, ac) and their rotation cycle errors."""
    nbr: list[set[int]] = [set() for _ in range(n)]
    for a, b in keys:
        nbr[a].add(b)
        nbr[b].add(a)
    tri = [(keys[(a, b)], keys[(b, c)], keys[(a, c)]) for (a, b) in keys for c in nbr[a] & nbr[b] if c > b]
    if not tri:
        return np.zeros((0, 3), np.int64), np.zeros(0)
    t = np.array(tri)
    return t, rot_angle(U[t[:, 0]] @ U[t[:, 1]] @ np.transpose(U[t[:, 2]], (0, 2, 1)))


def _key_medians(n_keys: int, tri: np.ndarray, err: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Per unordered edge: median cycle error over its live triangles; NaN when it has none."""
    per_key: list[list[float]] = [[] for _ in range(n_keys)]
    for k, e in zip(tri[live].ravel().tolist(), np.repeat(err[live], 3).tolist()):
        per_key[k].append(e)
    return np.array([np.median(v) if v else np.nan for v in per_key])


def triangle_scores(n: int, edges: EdgeSet, max_error: float | None = None,
                    factor: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Per directed edge: median rotation cycle error (rad) of its triangles (NaN when none), and inlier flags.

    Edges are culled worst first: after each removal the triangles through it no longer count against its
    neighbours, so one wrong pair does not take the good edges around it down with it.
    """
    keys, U = _unordered(edges)
    tri, err = _triangles(n, keys, U)
    to_key = np.array([keys[(min(i, j), max(i, j))] for i, j in zip(edges.i.tolist(), edges.j.tolist())])
    med = _key_medians(len(keys), tri, err, np.ones(len(err), bool))
    limit = np.inf if max_error is None else max(max_error, factor * float(np.median(err)) if err.size else 0.0)
    bad = np.zeros(len(keys), bool)
    current = med.copy()
    while err.size and np.nanmax(np.where(bad, np.nan, current), initial=-np.inf) > limit:
        bad[int(np.nanargmax(np.where(bad, np.nan, current)))] = True
        current = _key_medians(len(keys), tri, err, ~bad[tri].any(axis=1))
    return med[to_key], ~bad[to_key]


def _find(parent: list[int], x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def spanning_tree_init(n: int, edges: EdgeSet, usable: np.ndarray, tri: np.ndarray, root: int) -> Sim3Array:
    """Compose measurements along a maximum spanning tree (triangle-supported, then confident edges first)."""
    rank = np.where(np.isnan(tri), 1, np.where(tri <= np.radians(5.0), 0, 2))
    order = np.lexsort((-edges.w, rank))
    parent = list(range(n))
    adj: list[list[tuple[int, int, bool]]] = [[] for _ in range(n)]
    for e in order.tolist():
        if not usable[e]:
            continue
        i, j = int(edges.i[e]), int(edges.j[e])
        ri, rj = _find(parent, i), _find(parent, j)
        if ri != rj:
            parent[ri] = rj
            adj[i].append((j, e, True))
            adj[j].append((i, e, False))
    S = identity(n)
    seen = {root}
    stack = [root]
    while stack:
        a = stack.pop()
        for b, e, forward in adj[a]:
            if b in seen:
                continue
            M = edges.M.take([e])
            if not forward:  # edge is b_S_a: world_S_b = world_S_a o (b_S_a)^-1
                M = inverse(M)
            Sb = compose(S.take([a]), M)
            S.s[b], S.R[b], S.t[b] = Sb.s[0], Sb.R[0], Sb.t[0]
            seen.add(b)
            stack.append(b)
    return S


def _cauchy(r: np.ndarray, w: np.ndarray, floor: float) -> np.ndarray:
    """Cauchy IRLS weights with a scale that follows the median residual (robust to a minority of outliers)."""
    sigma = max(floor, 2.5 * 1.4826 * float(np.median(r))) if r.size else floor
    return w / (1.0 + (r / sigma) ** 2)


def _solve_blocks(n_vars: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, rhs: np.ndarray,
                  row_w: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """argmin_x sum row_w * (J x - rhs)^2 with `fixed` variables pinned to 0 (sparse normal equations)."""
    J = sp.csr_matrix((vals, (rows, cols)), shape=(len(rhs), n_vars))
    JtW = J.T.multiply(row_w[None, :]).tocsr()
    prior = np.full(n_vars, 1e-9)
    prior[fixed] = 1e9
    A = (JtW @ J + sp.diags(prior)).tocsc()
    return spsolve(A, JtW @ rhs)


def refine_rotations(R: np.ndarray, edges: EdgeSet, active: np.ndarray, root: int, iters: int) -> np.ndarray:
    """Gauss-Newton on SO(3) with right perturbations: r_e = Log(M_e^T R_i^T R_j) ~ r0 + d_j - R_j^T R_i d_i."""
    ei, ej = edges.i[active], edges.j[active]
    Mt = np.transpose(edges.M.R[active], (0, 2, 1))
    n, E = len(R), len(ei)
    if E == 0:
        return R
    base = np.arange(E)[:, None] * 3 + np.arange(3)[None, :]
    for _ in range(iters):
        r0 = rot_log(Mt @ np.transpose(R[ei], (0, 2, 1)) @ R[ej])
        wr = _cauchy(np.linalg.norm(r0, axis=1), edges.w[active], np.radians(0.05))
        A = -np.transpose(R[ej], (0, 2, 1)) @ R[ei]
        rows = np.concatenate([np.repeat(base, 3, axis=1).ravel(), base.ravel()])
        cols = np.concatenate([(ei[:, None, None] * 3 + np.arange(3)[None, None, :]).repeat(3, 1).reshape(E, 9).ravel(),
                               (ej[:, None] * 3 + np.arange(3)[None, :]).ravel()])
        vals = np.concatenate([A.reshape(-1), np.ones(3 * E)])
        fixed = np.arange(3 * root, 3 * root + 3)
        d = _solve_blocks(3 * n, rows, cols, vals, -r0.ravel(), np.repeat(wr, 3), fixed).reshape(n, 3)
        R = R @ rot_exp(d)
        if np.abs(d).max() < 1e-10:
            break
    return R


def solve_scales(log_s: np.ndarray, edges: EdgeSet, active: np.ndarray, root: int, iters: int) -> np.ndarray:
    """IRLS on log s_j - log s_i = log s_ij."""
    ei, ej = edges.i[active], edges.j[active]
    E = len(ei)
    if E == 0:
        return log_s
    b = np.log(edges.M.s[active])
    rows = np.concatenate([np.arange(E), np.arange(E)])
    cols = np.concatenate([ej, ei])
    vals = np.concatenate([np.ones(E), -np.ones(E)])
    for _ in range(iters):
        wr = _cauchy(np.abs(log_s[ej] - log_s[ei] - b), edges.w[active], 1e-4)
        log_s = _solve_blocks(len(log_s), rows, cols, vals, b, wr, np.array([root]))
    return log_s


def solve_translations(S: Sim3Array, edges: EdgeSet, active: np.ndarray, root: int, iters: int) -> np.ndarray:
    """IRLS on t_j - t_i = s_i R_i t_ij (linear once rotations and scales are fixed)."""
    ei, ej = edges.i[active], edges.j[active]
    E, n = len(ei), len(S)
    if E == 0:
        return S.t
    b = S.s[ei, None] * np.einsum("eab,eb->ea", S.R[ei], edges.M.t[active])
    rr = np.arange(3 * E)
    rows = np.concatenate([rr, rr])
    cols = np.concatenate([(ej[:, None] * 3 + np.arange(3)).ravel(), (ei[:, None] * 3 + np.arange(3)).ravel()])
    vals = np.concatenate([np.ones(3 * E), -np.ones(3 * E)])
    t = S.t
    floor = 1e-4 * float(np.median(S.s[np.unique(np.concatenate([ei, ej]))]))
    for _ in range(iters):
        r = np.linalg.norm(t[ej] - t[ei] - b, axis=1)
        wr = _cauchy(r, edges.w[active], floor)
        t = _solve_blocks(3 * n, rows, cols, vals, b.ravel(), np.repeat(wr, 3),
                          np.arange(3 * root, 3 * root + 3)).reshape(n, 3)
    return t


def edge_residuals(S: Sim3Array, edges: EdgeSet, samples_NM3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation residual (rad) and point residual per edge.

    The point residual is the RMS distance between frame j's sample points placed by world_S_j and by
    world_S_i o M_e, divided by world_S_i's scale (canonical depths have median 1), i.e. relative to depth.
    """
    Si, Sj = S.take(edges.i), S.take(edges.j)
    rot = rot_angle(np.transpose(edges.M.R, (0, 2, 1)) @ np.transpose(Si.R, (0, 2, 1)) @ Sj.R)
    p = samples_NM3[edges.j]
    d = Sj.apply(p) - compose(Si, edges.M).apply(p)
    point = np.sqrt(np.mean(np.sum(d * d, axis=-1), axis=1)) / Si.s
    return rot, point


def _largest_component(n: int, edges: EdgeSet, active: np.ndarray) -> np.ndarray:
    """Mask of frames in the largest connected component of the active edges (frames without edges excluded)."""
    A = sp.coo_matrix((np.ones(int(active.sum())), (edges.i[active], edges.j[active])), shape=(n, n))
    _, labels = connected_components(A, directed=False)
    degree = np.bincount(np.concatenate([edges.i[active], edges.j[active]]), minlength=n)
    counts = np.bincount(labels[degree > 0], minlength=labels.max() + 1) if (degree > 0).any() else None
    if counts is None:
        return np.zeros(n, bool)
    return (labels == int(np.argmax(counts))) & (degree > 0)


def _solve_once(S: Sim3Array, edges: EdgeSet, active: np.ndarray, root: int, iters: int) -> Sim3Array:
    R = refine_rotations(S.R, edges, active, root, iters)
    log_s = solve_scales(np.log(S.s), edges, active, root, iters)
    S = Sim3Array(np.exp(log_s), R, S.t)
    return Sim3Array(S.s, R, solve_translations(S, edges, active, root, iters))


def solve_graph(n: int, edges: EdgeSet, samples_NM3: np.ndarray, config: GraphConfig) -> GraphSolution:
    """Robust Sim(3) averaging; the gauge is the lowest-index frame of the largest component (identity)."""
    tri, inlier = triangle_scores(n, edges, config.triangle_max_error, config.triangle_factor)
    aligned = _largest_component(n, edges, inlier)
    root = int(np.flatnonzero(aligned)[0]) if aligned.any() else 0
    S = spanning_tree_init(n, edges, inlier, tri, root)
    rot = point = np.zeros(len(edges.i))
    for _ in range(config.rounds):
        active = inlier & aligned[edges.i] & aligned[edges.j]
        S = _solve_once(S, edges, active, root, config.iterations)
        rot, point = edge_residuals(S, edges, samples_NM3)
        ref = active if active.any() else np.ones_like(active)
        new = ((rot <= max(config.reject_rot, config.reject_factor * np.median(rot[ref])))
               & (point <= max(config.reject_point, config.reject_factor * np.median(point[ref]))))
        new_aligned = _largest_component(n, edges, new)
        if np.array_equal(new, inlier) and np.array_equal(new_aligned, aligned):
            break
        inlier, aligned = new, new_aligned
        if not aligned[root]:
            root = int(np.flatnonzero(aligned)[0]) if aligned.any() else 0
            S = spanning_tree_init(n, edges, inlier, tri, root)
    return GraphSolution(S, inlier & aligned[edges.i] & aligned[edges.j], rot, point, aligned, root)
