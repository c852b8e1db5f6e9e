"""Derive the synthetic generator's parameters (datasets.py) from the released coursework datasets.

    python reference/coursework/fit_datasets.py catapult_dataset1.csv catapult_dataset2.csv

Reads the two released files (the course keeps them outside the repository) and prints the numbers
datasets.py holds, so they can be checked or refitted; it writes nothing, and no released row is
ever copied into the repository:

* every input's marginal: the mean and spread of a normal truncated to the released range
  (maximum likelihood), the temperature's in whole degrees;
* dataset 1's law: a logistic regression of the label on the log arm length, log ball weight,
  log ball radius, temperature, spring constant and device weight (Newton's method);
* dataset 2's law: per class, a mixture of Gaussians (EM, the best of several starts) in the plane
  of ``u = log(spring * arm**SPRING_ARM_POWER)`` and ``v = log(radius / weight**RADIUS_WEIGHT_POWER)``.
  The two powers are datasets.py's own: they were found once by training a network whose first
  layer has two linear units on the log inputs (the starts that trained well agreed on them to
  0.05 and scored as well as an unconstrained network), which showed that the label depends on
  those two combinations only.

It also prints how well each law separates the released labels (the accuracy of its most likely
class): the best a model trained on the synthetic data can hope for on the real data.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import optimize, stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datasets import (RADIUS_WEIGHT_POWER, SPRING_ARM_POWER, logit_features,  # noqa: E402
                      plane)

COMPONENTS = 6
EM_STARTS = 8
EM_STEPS = 300


def read(path) -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    return data[:, :6], data[:, 6]


def truncated_normal(x: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The maximum-likelihood mean and spread of a normal truncated to [low, high]."""
    def nll(p):
        mean, sd = p[0], np.exp(p[1])
        return -stats.truncnorm.logpdf(x, (low - mean) / sd, (high - mean) / sd, loc=mean, scale=sd).sum()
    fit = optimize.minimize(nll, [x.mean(), np.log(x.std())], method="Nelder-Mead")
    return float(fit.x[0]), float(np.exp(fit.x[1]))


def logistic(F: np.ndarray, y: np.ndarray, steps: int = 50) -> np.ndarray:
    """Intercept and coefficients of the logistic regression of y on the columns of F."""
    A = np.column_stack([np.ones(len(F)), F])
    w = np.zeros(A.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-A @ w))
        w -= np.linalg.solve((A * (p * (1 - p))[:, None]).T @ A, A.T @ (p - y))
    return w


def _log_densities(U, weights, means, covs) -> np.ndarray:
    out = []
    for w, m, c in zip(weights, means, covs, strict=True):
        d = U - m
        out.append(np.log(w) - 0.5 * np.einsum("ni,ij,nj->n", d, np.linalg.inv(c), d)
                   - 0.5 * np.log(np.linalg.det(c)) - np.log(2 * np.pi))
    return np.column_stack(out)


def mixture_log_density(U, weights, means, covs) -> np.ndarray:
    L = _log_densities(U, weights, means, covs)
    top = L.max(axis=1)
    return top + np.log(np.exp(L - top[:, None]).sum(axis=1))


def mixture(U: np.ndarray, k: int, seed: int):
    """A k-component Gaussian mixture of the rows of U by EM: (weights, means, covariances, mean log-likelihood)."""
    rng = np.random.default_rng(seed)
    weights, means = np.full(k, 1 / k), U[rng.choice(len(U), k, replace=False)]
    covs = np.array([np.cov(U.T) / k] * k)
    for _ in range(EM_STEPS):
        L = _log_densities(U, weights, means, covs)
        R = np.exp(L - L.max(axis=1, keepdims=True))
        R /= R.sum(axis=1, keepdims=True)
        n = R.sum(axis=0) + 1e-9
        weights, means = n / len(U), (R.T @ U) / n[:, None]
        covs = np.array([((R[:, j, None] * (U - means[j])).T @ (U - means[j])) / n[j] + 1e-6 * np.eye(2)
                         for j in range(k)])
    return weights, means, covs, float(mixture_log_density(U, weights, means, covs).mean())


def main(path1, path2) -> None:
    for number, path in ((1, path1), (2, path2)):
        X, y = read(path)
        arm, weight, radius, temperature, spring, device = X.T
        print(f"# dataset {number}: {len(y)} designs, {y.mean():.3f} hits")
        for name, x in (("arm", arm), ("ball weight", weight), ("temperature", temperature)) + (
                (("radius", radius), ("spring", spring)) if number == 1 else ()):
            low, high = x.min(), x.max()
            rounding = 0.5 if name == "temperature" else 0.0  # whole degrees: the normal reaches half a degree out
            mean, sd = truncated_normal(x, low - rounding, high + rounding)
            print(f"{name}: mean {mean:.4g}, sd {sd:.4g}, released range [{low:.4g}, {high:.4g}]")
        print(f"device weight: released range [{device.min():.3g}, {device.max():.3g}]")
        if number == 1:
            w = logistic(logit_features(X), y)
            z = w[0] + logit_features(X) @ w[1:]
            print(f"LOGIT_1 = ({w[0]:.4g}, ({', '.join(f'{c:.4g}' for c in w[1:])}))")
            print(f"  separates the released labels with accuracy {np.mean((z > 0) == y):.3f}")
            continue
        print(f"spring: released range [{spring.min():.4g}, {spring.max():.4g}]; "
              f"radius: [{radius.min():.4g}, {radius.max():.4g}]")
        U = plane(X)
        fits = {c: max((mixture(U[y == c], COMPONENTS, s) for s in range(EM_STARTS)), key=lambda f: f[3])
                for c in (0, 1)}
        for c, (weights, means, covs, _) in fits.items():
            print(f"class {c}:")
            for j in np.argsort(-weights):
                (u, v), ((uu, uv), (_, vv)) = means[j], covs[j]
                print(f"    ({weights[j]:.4f}, ({u:.4f}, {v:.4f}), ({uu:.5f}, {uv:.5f}, {vv:.5f})),")
        share = y.mean()
        posterior = (mixture_log_density(U, *fits[1][:3]) + np.log(share)
                     - mixture_log_density(U, *fits[0][:3]) - np.log(1 - share))
        print(f"  separates the released labels with accuracy {np.mean((posterior > 0) == y):.3f}")
        print(f"  (u = log(spring * arm**{SPRING_ARM_POWER}), v = log(radius / weight**{RADIUS_WEIGHT_POWER}))")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
