"""DualGPM: the per-layer memory of the input subspace old tasks occupy.

The memory holds an orthonormal basis ``M`` (``d x k``) of the protected subspace, or, once
``k`` passes half of ``d``, an orthonormal basis of its complement (the "dual" part), whichever
is smaller. New branches are designed orthogonal to the protected subspace.
"""

from __future__ import annotations

from itertools import accumulate

import torch
from torch import nn

EPS = torch.finfo(torch.float64).eps


class SubspaceMemory(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.complement = False  # True: ``basis`` spans the complement of the protected subspace
        self.register_buffer("basis", torch.zeros(dim, 0, dtype=torch.float64))

    @property
    def protected_dims(self) -> int:
        k = self.basis.shape[1]
        return self.dim - k if self.complement else k

    def protected_basis(self) -> torch.Tensor:
        """Orthonormal ``d x k`` basis of the protected subspace (for tests and diagnostics)."""
        if not self.complement:
            return self.basis
        return _orthonormal_complement(self.basis, self.dim)

    def project_out(self, X: torch.Tensor) -> torch.Tensor:
        """``(I - M M^T) X``: the columns of ``X`` with the protected subspace removed."""
        U = self.basis.to(X.dtype)
        if self.complement:
            return U @ (U.T @ X)
        return X - U @ (U.T @ X)

    def design(self, cov: torch.Tensor, rank: int) -> torch.Tensor:
        """InfLoRA's ``B_t`` (``rank x d``): the top left singular vectors of the covariance with
        the protected subspace removed. The rows are projected once more so that they are
        orthogonal to the protected subspace even where ``C_hat``'s spectrum is (numerically)
        zero and the singular vectors are arbitrary."""
        c_hat = self.project_out(cov.double())
        U, _, _ = torch.linalg.svd(c_hat)
        return self.project_out(U[:, :rank]).T

    def update(self, cov: torch.Tensor, threshold: float, energy: str = "paper",
               first_task: str = "reach") -> int:
        """Add the fewest new directions that bring the captured energy of ``cov`` up to
        ``threshold``; return how many were added. Only directions with positive energy (above
        rounding, ``d * eps`` of the total) are ever added: at ``threshold = 1`` every direction
        the data occupies is protected and no empty one. ``first_task='below'`` (official code):
        into an empty memory, the directions whose cumulative energy stays below ``threshold``
        (at least one), one fewer than reaching it."""
        C = cov.double()
        if energy == "paper":  # eigenvalues of C = squared singular values of the representation
            total = torch.trace(C)
            residual = self.project_out(self.project_out(C).T)  # (I-P) C (I-P), symmetric
            values, vectors = torch.linalg.eigh(residual)
            values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
            floor = float(total) * self.dim * EPS
        else:  # the official code: squared singular values of the covariance itself
            total = (torch.linalg.svdvals(C) ** 2).sum()
            vectors, s, _ = torch.linalg.svd(self.project_out(C))
            values = s**2
            floor = float(total) * (self.dim * EPS) ** 2  # the same rounding floor on s
        if total <= 0:
            return 0
        available = min(int((values > floor).sum()), self.dim - self.protected_dims)
        ratios = (values[:available] / total).tolist()
        if first_task == "below" and self.protected_dims == 0:
            r = min(available, max(1, sum(c < threshold for c in accumulate(ratios))))
        else:
            captured = float((total - values.sum()) / total)  # energy already protected
            r = 0
            while captured < threshold and r < available:
                captured += ratios[r]
                r += 1
        if r == 0:
            return 0
        new = vectors[:, :r]
        if self.complement:  # remove the new directions from the complement
            kept = self.basis.shape[1] - r
            U, _, _ = torch.linalg.svd(self.basis - new @ (new.T @ self.basis))
            self.basis = U[:, :kept].contiguous()
        else:
            self.basis = torch.cat([self.basis, new], dim=1)
            if self.basis.shape[1] > self.dim / 2:  # store the smaller, complementary basis
                self.basis = _orthonormal_complement(self.basis, self.dim)
                self.complement = True
        return r

    def state(self) -> dict:
        return {"columns": self.basis.shape[1], "complement": self.complement}

    def load_state(self, state: dict) -> None:
        self.basis = torch.zeros(self.dim, state["columns"], dtype=torch.float64)
        self.complement = state["complement"]


def _orthonormal_complement(M: torch.Tensor, dim: int) -> torch.Tensor:
    """Orthonormal basis of the orthogonal complement of ``M``'s (orthonormal) columns."""
    U, _, _ = torch.linalg.svd(M, full_matrices=True)
    return U[:, M.shape[1]:dim].contiguous()
