"""Layer-quality metrics used by EDSelect, as pure torch functions plus streaming accumulators.

EDSelect (EDSD paper, Sec. 3.2 and App. A.1) scores every target layer with metrics from
Skean et al. 2025, "Layer by Layer: Uncovering Hidden Representations in Language Models"
(ICML 2025, arXiv:2502.02013). The definitions used here:

* Matrix-based entropy (EDSD paper Eq. 3-4; Sanchez Giraldo et al. 2015), alpha -> 1:
  ``M_1(Z) = -sum_i p_i log p_i`` with ``p_i = lambda_i(K) / tr(K)`` and ``K = Z Z^T``
  (uncentered Gram). ``Z^T Z`` has the same non-zero spectrum as ``Z Z^T``, so whichever
  of the two is smaller is decomposed. Unit: nats; 0 for rank-1 data, log(d) for isotropic.
* Curvature (Hosseini & Fedorenko 2023, "Large language models implicitly learn to
  straighten neural sentence trajectories", NeurIPS 2023): for token states
  ``x_1..x_T`` of one sequence, ``v_k = x_{k+1} - x_k`` and
  ``curvature = mean_k arccos(<v_k, v_{k+1}> / (|v_k| |v_{k+1}|))`` in radians
  (0 = a straight trajectory, pi = a trajectory that reverses at every step).
* LiDAR (Thilak et al. 2024, "LiDAR: Sensing Linear Probing Performance in Joint Embedding
  SSL Architectures", ICLR 2024): classes = source inputs, samples = augmented views of
  each input. ``Sigma_b`` = covariance of the class means, ``Sigma_w`` = pooled covariance
  of views around their class mean, regularised ``Sigma_w + delta I``; LiDAR is the
  effective rank ``exp(H(p))`` of the spectrum of
  ``Sigma_w^{-1/2} Sigma_b Sigma_w^{-1/2}``, ``p = lambda / ||lambda||_1``.

Memory: every accumulator keeps at most a d x d float64 matrix (plus fewer than
``fold_rows`` buffered float32 rows), however many samples stream through it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "CurvatureAccumulator",
    "LidarAccumulator",
    "ScatterAccumulator",
    "curvature",
    "effective_rank",
    "lda_spectrum",
    "lidar",
    "lidar_from_views",
    "matrix_entropy",
    "matrix_entropy_from_eigenvalues",
    "matrix_entropy_of_states",
    "spectrum_entropy",
]


def spectrum_entropy(eigenvalues: Tensor) -> float:
    """Shannon entropy (nats) of a non-negative spectrum normalised to sum 1, with 0 log 0 = 0.

    Tiny negative eigenvalues from round-off are clamped to 0. An all-zero spectrum has
    entropy 0. (Thilak et al. add eps=1e-7 to every p_i; we do not, so the value does not
    depend on how many exact zeros a decomposition happens to return.)
    """
    lam = eigenvalues.detach().to(torch.float64).clamp(min=0.0)
    total = lam.sum()
    if not bool(total > 0):
        return 0.0
    p = lam / total
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def matrix_entropy_from_eigenvalues(eigenvalues: Tensor) -> float:
    """M_1 from the eigenvalues of a Gram/covariance matrix: the entropy of lambda / tr(K)."""
    return spectrum_entropy(eigenvalues)


def effective_rank(eigenvalues: Tensor) -> float:
    """exp(entropy of the normalised spectrum) (Roy & Vetterli 2007), the form LiDAR reports."""
    return math.exp(spectrum_entropy(eigenvalues))


def matrix_entropy(gram: Tensor) -> float:
    """M_1 (EDSD Eq. 4) of a symmetric PSD Gram or covariance matrix K."""
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"matrix_entropy expects a square matrix, got shape {tuple(gram.shape)}")
    k = gram.detach().to(torch.float64)
    return matrix_entropy_from_eigenvalues(torch.linalg.eigvalsh((k + k.T) / 2))


def _small_side_gram(z: Tensor) -> Tensor:
    """Z Z^T or Z^T Z, whichever is smaller; both have the same non-zero spectrum."""
    z = z.detach().to(torch.float64)
    return z @ z.T if z.shape[0] <= z.shape[1] else z.T @ z


def matrix_entropy_of_states(states: Tensor) -> float:
    """M_1 of hidden states Z [N, d] with K = Z Z^T (Skean et al.'s "prompt entropy" for one prompt)."""
    if states.ndim != 2 or states.shape[0] == 0:
        raise ValueError(f"expected hidden states of shape [N, d] with N >= 1, got {tuple(states.shape)}")
    return matrix_entropy(_small_side_gram(states))


def curvature(states: Tensor) -> float:
    """Average turning angle (radians) of one sequence's trajectory x_1..x_T, T >= 3.

    Hosseini & Fedorenko 2023 (Sec. 3): v_k = x_{k+1} - x_k, c_k = arccos(cos(v_k, v_{k+1})),
    curvature = mean_k c_k. They read LOWER curvature as a straighter, more predictable
    trajectory; the EDSD paper (Sec. 3.2) instead treats higher values as better and
    EDSelect takes the argmax. Pairs involving a zero-length step (no direction) are
    skipped; a trajectory with no usable pair raises ValueError.
    """
    if states.ndim != 2 or states.shape[0] < 3:
        raise ValueError(f"curvature needs a trajectory [T, d] with T >= 3, got {tuple(states.shape)}")
    x = states.detach().to(torch.float64)
    v = x[1:] - x[:-1]
    norms = v.norm(dim=-1)
    scale = float(norms.max())
    if scale == 0.0:
        raise ValueError("curvature: every step of the trajectory has zero length")
    valid = (norms[:-1] > 1e-12 * scale) & (norms[1:] > 1e-12 * scale)
    if not bool(valid.any()):
        raise ValueError("curvature: no two consecutive non-zero steps in the trajectory")
    cos = (v[:-1] * v[1:]).sum(-1)[valid] / (norms[:-1][valid] * norms[1:][valid])
    return float(torch.arccos(cos.clamp(-1.0, 1.0)).mean())


class CurvatureAccumulator:
    """Mean of per-sequence curvature over a stream of sequences (each sequence weighs 1)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self.skipped = 0

    def update(self, states: Tensor) -> None:
        """Add one sequence [T, d]; sequences too short or degenerate are counted in `skipped`."""
        try:
            value = curvature(states)
        except ValueError:
            self.skipped += 1
            return
        self.total += value
        self.count += 1

    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


class ScatterAccumulator:
    """Streams rows x_i in R^d and yields S = sum_i (x_i - c)(x_i - c)^T.

    c = 0 (``centered=False``: the Gram form Z^T Z) or c = the sample mean
    (``centered=True``: the scatter around the mean). Rows are buffered in float32 until
    ``fold_rows`` (default d) have arrived, then folded into a float64 d x d matrix, so
    memory never exceeds one d x d matrix plus one d x d buffer. While fewer than d rows
    have arrived, the rows themselves are kept and spectra are taken from the n x n side.
    Centering after folding uses a shift by the first row, which avoids the cancellation
    of ``sum x x^T - n m m^T`` on the large-mean outlier dimensions of LLM hidden states.
    """

    def __init__(self, dim: int, centered: bool, fold_rows: int | None = None) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.centered = centered
        self.fold_rows = max(1, fold_rows if fold_rows is not None else dim)
        self.count = 0
        self._buffer: list[Tensor] = []
        self._buffered = 0
        self._scatter: Tensor | None = None  # sum of (x - shift)(x - shift)^T, float64
        self._sum: Tensor | None = None  # sum of (x - shift), float64
        self._shift: Tensor | None = None

    @property
    def folded(self) -> bool:
        return self._scatter is not None

    def update(self, rows: Tensor) -> None:
        """Add rows [n, d] (or one row [d])."""
        if rows.ndim == 1:
            rows = rows[None]
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"expected rows of shape [n, {self.dim}], got {tuple(rows.shape)}")
        if rows.shape[0] == 0:
            return
        self._buffer.append(rows.detach().to("cpu", torch.float32))
        self._buffered += rows.shape[0]
        self.count += rows.shape[0]
        if self._buffered >= self.fold_rows:
            self._fold()

    def _fold(self) -> None:
        if not self._buffer:
            return
        x = torch.cat(self._buffer).to(torch.float64)
        self._buffer, self._buffered = [], 0
        if self._scatter is None:
            self._scatter = torch.zeros(self.dim, self.dim, dtype=torch.float64)
            self._sum = torch.zeros(self.dim, dtype=torch.float64)
            self._shift = x[0].clone() if self.centered else torch.zeros(self.dim, dtype=torch.float64)
        x = x - self._shift
        self._sum += x.sum(0)
        self._scatter += x.T @ x

    def rows(self) -> Tensor | None:
        """The (centered, if requested) rows R with R^T R = S, float64; None once folded."""
        if self.folded:
            return None
        if not self._buffer:
            return torch.zeros(0, self.dim, dtype=torch.float64)
        x = torch.cat(self._buffer).to(torch.float64)
        return x - x.mean(0) if self.centered else x

    def scatter(self) -> Tensor:
        """S as a d x d float64 matrix."""
        r = self.rows()
        if r is not None:
            return r.T @ r
        self._fold()
        s = self._scatter.clone()
        if self.centered:
            m = self._sum / self.count
            s -= self.count * torch.outer(m, m)
        return (s + s.T) / 2

    def eigenvalues(self) -> Tensor:
        """Eigenvalues of S (descending, clamped at 0), from the smaller of the n x n / d x d sides."""
        r = self.rows()
        k = (r @ r.T if r.shape[0] < self.dim else r.T @ r) if r is not None else self.scatter()
        return torch.linalg.eigvalsh(k).flip(0).clamp(min=0.0)

    def entropy(self) -> float:
        """Matrix entropy M_1 of S."""
        return matrix_entropy_from_eigenvalues(self.eigenvalues())


def _regularised_cholesky(sigma_w: Tensor, delta: float) -> Tensor:
    """Cholesky factor of Sigma_w + delta_abs I with delta_abs = delta * tr(Sigma_w) / d."""
    d = sigma_w.shape[0]
    mean_var = float(torch.trace(sigma_w)) / d
    delta_abs = delta * mean_var if mean_var > 0 else 1.0
    a = (sigma_w + sigma_w.T) / 2 + delta_abs * torch.eye(d, dtype=sigma_w.dtype)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:  # round-off made it indefinite: lift the spectrum to delta_abs
        lam, vec = torch.linalg.eigh(a)
        chol = torch.linalg.cholesky((vec * lam.clamp(min=delta_abs)) @ vec.T)
    return chol


def lda_spectrum(
    sigma_w: Tensor,
    *,
    sigma_b: Tensor | None = None,
    between_rows: Tensor | None = None,
    delta: float = 1e-4,
) -> Tensor:
    """Eigenvalues (descending) of Sigma_w^{-1/2} Sigma_b Sigma_w^{-1/2}, Sigma_w regularised.

    Give Sigma_b either as a d x d matrix or as rows B with Sigma_b = B^T B (then the
    n x n matrix (L^-1 B^T)^T (L^-1 B^T) is decomposed, n = number of classes). With
    Sigma_w + delta I = L L^T, L^-1 Sigma_b L^-T is similar to Sigma_w^-1 Sigma_b and thus has
    the spectrum of the symmetric form in Thilak et al.

    ``delta`` is relative: delta_abs = delta * tr(Sigma_w) / d. Thilak et al. use a fixed
    small delta; scaling it by the mean within-class variance makes LiDAR invariant to the
    overall scale of a layer (the residual stream's norm grows with depth), and it keeps
    the metric finite when there are fewer views than dimensions (Sigma_w rank-deficient).
    """
    w = sigma_w.detach().to(torch.float64)
    chol = _regularised_cholesky(w, delta)
    if between_rows is not None:
        m = torch.linalg.solve_triangular(chol, between_rows.detach().to(torch.float64).T, upper=False)
        k = m.T @ m
    elif sigma_b is not None:
        b = sigma_b.detach().to(torch.float64)
        m = torch.linalg.solve_triangular(chol, (b + b.T) / 2, upper=False)
        k = torch.linalg.solve_triangular(chol, m.T, upper=False)
    else:
        raise ValueError("lda_spectrum needs sigma_b or between_rows")
    return torch.linalg.eigvalsh((k + k.T) / 2).flip(0).clamp(min=0.0)


def lidar(sigma_w: Tensor, sigma_b: Tensor, delta: float = 1e-4) -> float:
    """LiDAR = effective rank of the LDA matrix built from Sigma_w and Sigma_b (Thilak et al. Eq. 2-4)."""
    return effective_rank(lda_spectrum(sigma_w, sigma_b=sigma_b, delta=delta))


def lidar_from_views(views: Tensor, delta: float = 1e-4) -> float:
    """Batch LiDAR of embeddings [N classes, Q views, d] (the reference the accumulator matches)."""
    if views.ndim != 3 or views.shape[0] < 2 or views.shape[1] < 2:
        raise ValueError(f"lidar_from_views expects [N>=2, Q>=2, d], got {tuple(views.shape)}")
    e = views.detach().to(torch.float64)
    n, q, _ = e.shape
    mu_x = e.mean(1)
    dev_w = (e - mu_x[:, None]).reshape(n * q, -1)
    dev_b = mu_x - mu_x.mean(0)
    sigma_w = dev_w.T @ dev_w / (n * (q - 1))
    sigma_b = dev_b.T @ dev_b / (n - 1)
    return lidar(sigma_w, sigma_b, delta)


class LidarAccumulator:
    """Streams one class (prompt) at a time as its views [Q, d] and yields LiDAR.

    Keeps a within-class scatter of view deviations from their class mean (exact per class,
    no cancellation) and a centered scatter of class means, each a ScatterAccumulator.
    """

    def __init__(self, dim: int, fold_rows: int | None = None) -> None:
        self.dim = dim
        self.within = ScatterAccumulator(dim, centered=False, fold_rows=fold_rows)
        self.between = ScatterAccumulator(dim, centered=True, fold_rows=fold_rows)
        self.num_classes = 0
        self.within_dof = 0

    def update(self, views: Tensor) -> None:
        """Add one class: its views' embeddings [Q, d], Q >= 2."""
        if views.ndim != 2 or views.shape[0] < 2:
            raise ValueError(f"LiDAR needs >= 2 views per class as [Q, d], got {tuple(views.shape)}")
        e = views.detach().to(torch.float64)
        mu = e.mean(0)
        self.within.update(e - mu)
        self.between.update(mu)
        self.num_classes += 1
        self.within_dof += e.shape[0] - 1

    def spectrum(self, delta: float = 1e-4) -> Tensor:
        if self.num_classes < 2:
            raise ValueError(f"LiDAR needs at least 2 classes (prompts), got {self.num_classes}")
        sigma_w = self.within.scatter() / self.within_dof
        rows = self.between.rows()
        scale = 1.0 / (self.num_classes - 1)
        if rows is not None:
            return lda_spectrum(sigma_w, between_rows=rows * math.sqrt(scale), delta=delta)
        return lda_spectrum(sigma_w, sigma_b=self.between.scatter() * scale, delta=delta)

    def value(self, delta: float = 1e-4) -> float:
        return effective_rank(self.spectrum(delta))
