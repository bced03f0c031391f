r"""Assign descriptors to visual concepts (spec §1.8-1.9): candidates, optimal transport, relevance order.

Optimal transport
-----------------
The reference builds :math:`C = 2.5\,S` from the concept x candidate cosine similarities ``S`` and runs a
custom Sinkhorn-Knopp loop: :math:`P_0 = \exp(\varepsilon C)` with :math:`\varepsilon = 1/\lambda = 1`,
then 1000 rounds of row normalisation followed by column normalisation, with *all-ones* marginals.

Here the plan comes from POT's :func:`ot.sinkhorn` with cost :math:`M = -C` and ``reg = lambda = 1``, so its
kernel :math:`K = \exp(-M/\mathrm{reg}) = \exp(\varepsilon C)` is the reference's :math:`P_0`, with uniform
marginals ``a = 1/n``, ``b = 1/m`` and at most 1000 iterations. Why the read-out is the same: every
Sinkhorn iterate has the form :math:`\mathrm{diag}(u) K \mathrm{diag}(v)`. With marginals ``(1, 1)`` and
``(1/n, 1/m)`` the updates ``u = a / Kv``, ``v = b / K^T u`` differ only by scalar factors, so ``v`` (the
column scaling) points in the same direction at every step. Within a row the plan is proportional to
:math:`K_{ij} v_j`; the row-wise order, which is all the top-k read-out uses, is therefore identical. Only
the row scale differs (the reference's rows do not sum to one; its marginals are inconsistent when
n != m). POT stops early once the marginal error is below ``stop_threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._checks import ClipauditError

__all__ = [
    "SIMILARITY_SCALE",
    "candidate_descriptors",
    "relevance_filter",
    "sinkhorn_plan",
    "topk_per_row",
    "assign_descriptors",
    "relevance_order",
]

#: The reference multiplies cosine similarities by 2.5 before OT and for relevance scores.
SIMILARITY_SCALE = 2.5


def candidate_descriptors(similarity: np.ndarray, *, top_k: int = 500) -> np.ndarray:
    """Descriptor indices in the top-``top_k`` of *every* concept (the intersection), ascending.

    Parameters
    ----------
    similarity : ndarray of shape (n_concepts, n_descriptors)
        Concept embedding x descriptor embedding dot products.
    top_k : int, default=500
        The notebook's ``op_initial_topk`` (``utils.py`` default 100). Capped at ``n_descriptors``.

    Returns
    -------
    ndarray of int
        Possibly empty.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2:
        raise ClipauditError(f"similarity must be (n_concepts, n_descriptors), got {similarity.shape}.")
    if similarity.shape[0] == 0 or similarity.shape[1] == 0:
        return np.zeros(0, dtype=np.int64)
    k = min(int(top_k), similarity.shape[1])
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    common = set(top[0].tolist())
    for row in top[1:]:
        common &= set(row.tolist())
    return np.array(sorted(common), dtype=np.int64)


def relevance_filter(candidates: np.ndarray, image_similarity: np.ndarray, *, mean_offset: float = 0.02
                     ) -> np.ndarray:
    """Keep candidates whose cosine with the whole image exceeds ``mean - mean_offset`` (over the candidates).

    Parameters
    ----------
    candidates : ndarray of int
        Descriptor indices.
    image_similarity : ndarray of shape (n_descriptors,)
        Cosine of every descriptor with the whole image.
    mean_offset : float, default=0.02
        The notebook's value (``utils.py`` default 0.01).
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    if candidates.size == 0:
        return candidates
    cos = np.asarray(image_similarity, dtype=np.float64)[candidates]
    return candidates[cos > cos.mean() - mean_offset]


def sinkhorn_plan(similarity: np.ndarray, *, scale: float = SIMILARITY_SCALE, reg: float = 1.0,
                  max_iter: int = 1000, stop_threshold: float = 1e-9) -> np.ndarray:
    """Entropic OT plan between concepts (rows) and descriptors (columns) with :func:`ot.sinkhorn`.

    Parameters
    ----------
    similarity : ndarray of shape (n, m)
        Cosine similarities; the cost is ``-scale * similarity``.
    scale : float, default=2.5
    reg : float, default=1.0
        Entropic regularisation (the reference's ``lambda_sinkhorn``; its epsilon is ``1 / reg``).
    max_iter : int, default=1000
    stop_threshold : float, default=1e-9

    Returns
    -------
    ndarray of shape (n, m)
        Plan with row sums ``1/n`` and column sums ``1/m``. Empty input gives an empty plan.
    """
    import ot

    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2:
        raise ClipauditError(f"similarity must be (n_concepts, n_descriptors), got {similarity.shape}.")
    n, m = similarity.shape
    if n == 0 or m == 0:
        return np.zeros((n, m))
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    return ot.sinkhorn(a, b, -scale * similarity, reg, numItermax=max_iter, stopThr=stop_threshold, warn=False)


def topk_per_row(plan: np.ndarray, k: int = 3) -> np.ndarray:
    """Column indices of the ``k`` largest entries of every row, best first; shape (n, min(k, m))."""
    plan = np.asarray(plan)
    k = min(int(k), plan.shape[1])
    return np.argsort(-plan, axis=1, kind="stable")[:, :k]


def assign_descriptors(concept_embeddings: np.ndarray, descriptor_embeddings: np.ndarray,
                       image_embedding: np.ndarray, *, top_k: int = 500, mean_offset: float = 0.02,
                       per_concept: int = 3, use_ot: bool = True, scale: float = SIMILARITY_SCALE,
                       reg: float = 1.0, max_iter: int = 1000) -> list[list[int]]:
    """Descriptors of each visual concept of one image (the reference's ``use_ot`` path).

    Parameters
    ----------
    concept_embeddings : ndarray of shape (n_concepts, dim)
        Averaged visual-prompt embeddings (one per concept).
    descriptor_embeddings : ndarray of shape (n_descriptors, dim)
        L2-normalised descriptor text embeddings (the pool).
    image_embedding : ndarray of shape (dim,)
        L2-normalised embedding of the whole image (relevance filter).
    top_k, mean_offset : see :func:`candidate_descriptors`, :func:`relevance_filter`.
    per_concept : int, default=3
        Descriptors read per concept row of the plan (duplicates across concepts allowed).
    use_ot : bool, default=True
        False: top-``per_concept`` of the raw similarities over the whole pool.

    Returns
    -------
    list of list of int
        Pool indices per concept; every list is empty when no candidate survives.
    """
    concepts = np.asarray(concept_embeddings, dtype=np.float64)
    desc = np.asarray(descriptor_embeddings, dtype=np.float64)
    if concepts.ndim != 2 or desc.ndim != 2 or (len(concepts) and concepts.shape[1] != desc.shape[1]):
        raise ClipauditError(
            f"concept_embeddings (n, dim) and descriptor_embeddings (m, dim) must share dim; got "
            f"{concepts.shape} and {desc.shape}."
        )
    if len(concepts) == 0:
        return []
    sim = concepts @ desc.T
    if not use_ot:
        return [row.tolist() for row in topk_per_row(sim, per_concept)]
    cand = relevance_filter(candidate_descriptors(sim, top_k=top_k), desc @ np.asarray(image_embedding),
                            mean_offset=mean_offset)
    if cand.size == 0:
        return [[] for _ in range(len(concepts))]
    plan = sinkhorn_plan(sim[:, cand], scale=scale, reg=reg, max_iter=max_iter)
    return [cand[row].tolist() for row in topk_per_row(plan, per_concept)]


def relevance_order(assigned: Sequence[Sequence[int]], descriptor_embeddings: np.ndarray,
                    image_embedding: np.ndarray, *, scale: float = SIMILARITY_SCALE
                    ) -> tuple[list[int], list[float]]:
    """The vision-side concept set D_v: assigned descriptors, deduplicated, sorted by relevance.

    Relevance is ``scale * cos(descriptor, image)``; the sort is stable and descending, so ties keep the
    order of first appearance (the reference dedups first-occurrence-wins, then sorts).

    Returns
    -------
    indices : list of int
    scores : list of float
    """
    flat = [int(i) for row in assigned for i in row]
    unique = list(dict.fromkeys(flat))
    if not unique:
        return [], []
    scores = scale * (np.asarray(descriptor_embeddings, dtype=np.float64)[unique] @ np.asarray(image_embedding))
    order = np.argsort(-scores, kind="stable")
    return [unique[i] for i in order], [float(scores[i]) for i in order]
