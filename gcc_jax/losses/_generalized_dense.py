"""GL on full ``cells × M`` matrices, vmapped over the batch (accelerators, and the ott solver).

Every image works on its padded ``[n, M]`` cost matrix; padding points carry weight 0 (log-weight
``−100000``, as geomloss gives zero masses), so they change nothing. Wide, regular kernels suit
GPUs and TPUs; on a CPU the chunked implementation is faster (see ``_generalized_chunked``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from gcc_jax.losses import _generalized_common as common
from gcc_jax.losses import _geometry

__all__ = ["converged_potentials", "dense_potentials", "dense_terms"]


def _softmin(eps, cost, log_weights, axis):
    """``−ε · log Σ exp(h − C / ε)`` reduced over ``axis`` of ``cost`` (geomloss ``softmin``)."""
    if axis == 0:
        return -eps * jax.nn.logsumexp(log_weights[:, None] - cost / eps, axis=0)
    return -eps * jax.nn.logsumexp(log_weights[None, :] - cost / eps, axis=1)


def _image_inputs(density, points, point_mask, hyper):
    h, w = density.shape
    cells, points = common.image_geometry(h, w, points, point_mask, hyper)
    alpha = density.reshape(-1)
    beta = point_mask.astype(alpha.dtype)
    cost = hyper.cost(cells, points, scale=hyper.scale)
    return cells, points, alpha, beta, cost


def _reference_image_potentials(density, points, point_mask, hyper):
    """The official geomloss ε-scaling loop for one image: ``(F [n], G [M])``.

    Initialised at the first blur of the schedule, then one symmetric, averaged update per
    blur ``e`` (damping ``λ(e) = 1 / (1 + e/ρ)`` recomputed each time), then one un-averaged
    extrapolation update at the final ``ε``.
    """
    cells, points, alpha, beta, cost = _image_inputs(density, points, point_mask, hyper)
    log_alpha, log_beta = common.log_weights(alpha), common.log_weights(beta)
    num_steps, epsilon = common.epsilon_schedule(common.diameter(cells, points, point_mask), hyper)

    eps0 = epsilon(jnp.int32(0))
    g = common.dampening(eps0, hyper) * _softmin(eps0, cost, log_alpha, axis=0)
    f = common.dampening(eps0, hyper) * _softmin(eps0, cost, log_beta, axis=1)

    def body(state):
        i, f, g = state
        eps = epsilon(i)
        lam = common.dampening(eps, hyper)
        g_new = lam * _softmin(eps, cost, log_alpha + f / eps, axis=0)
        f_new = lam * _softmin(eps, cost, log_beta + g / eps, axis=1)
        return i + 1, 0.5 * (f + f_new), 0.5 * (g + g_new)

    _, f, g = lax.while_loop(lambda s: s[0] < num_steps, body, (jnp.int32(0), f, g))
    eps, lam = hyper.eps, common.dampening(hyper.eps, hyper)
    g_last = lam * _softmin(eps, cost, log_alpha + f / eps, axis=0)
    f_last = lam * _softmin(eps, cost, log_beta + g / eps, axis=1)
    return f_last, g_last


def _converged_image_potentials(density, points, point_mask, hyper):
    """The same fixed point solved to convergence at ``ε = blur^p`` with ott-jax's Sinkhorn.

    ott's unbalanced problem penalises plain entropy, geomloss's KL(Π | α⊗β); passing the
    weights as ``α^(1/τ)``, ``β^(1/τ)`` with ``τ = ρ / (ρ + ε)`` makes the fixed points
    coincide. ott's plan is ``exp((f + g − C)/ε)``, so ``G = g − ε log β`` (``β`` ∈ {0, 1});
    ``F`` is then taken from the fixed-point map ``F = τ · softmin_ε(C, log β + G/ε)``, which
    equals ``f − ε log α`` at convergence and stays finite on cells with zero density.
    """
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn

    _, _, alpha, beta, cost = _image_inputs(density, points, point_mask, hyper)
    eps = hyper.eps
    tau = hyper.rho / (hyper.rho + eps)
    problem = linear_problem.LinearProblem(
        geometry.Geometry(cost_matrix=cost, epsilon=eps),
        a=alpha ** (1.0 / tau),
        b=beta,  # 1 ** (1/τ) = 1 and 0 ** (1/τ) = 0
        tau_a=tau,
        tau_b=tau,
    )
    solver = sinkhorn.Sinkhorn(
        threshold=hyper.threshold, max_iterations=hyper.max_iterations, implicit_diff=None
    )
    g = jnp.where(point_mask, solver(problem).g, 0.0)
    f = tau * _softmin(eps, cost, common.log_weights(beta) + g / eps, axis=1)
    return f, g


def dense_potentials(density, points, point_mask, hyper):
    """``(F [B, n], G [B, M])`` of the reference ε-scaling loop, vmapped over the batch."""
    return jax.vmap(lambda d, x, m: _reference_image_potentials(d, x, m, hyper))(
        density, points, point_mask
    )


def converged_potentials(density, points, point_mask, hyper):
    """``(F [B, n], G [B, M])`` solved to convergence by ott-jax, vmapped over the batch."""
    return jax.vmap(lambda d, x, m: _converged_image_potentials(d, x, m, hyper))(
        density, points, point_mask
    )


def _divergence(residual, kind):
    # PyTorch's |x| has derivative 0 at 0 (jnp.abs: 1); the chunked gradient uses sign() too.
    return _geometry.abs_zero_subgradient(residual) if kind == "l1" else residual * residual


def image_terms(density, points, point_mask, f, g, hyper):
    """GL terms of one image with at least one real point, for given constant potentials.

    This is the part of GL that is differentiated: gradients reach ``density`` through ``α`` in
    the OT term, through the plan (point and entropy terms) and through the pixel term.

    Returns:
      ``[4]`` array ``(ot, point, pixel, entropy)``.
    """
    eps, rho = hyper.eps, hyper.rho
    _, _, alpha, beta, cost = _image_inputs(density, points, point_mask, hyper)
    ot = (rho + eps / 2.0) * (
        jnp.sum(alpha * (1.0 - jnp.exp(jnp.minimum(-f / rho, common.MAX_EXPONENT))))
        + jnp.sum(beta * (1.0 - jnp.exp(jnp.minimum(-g / rho, common.MAX_EXPONENT))))
    )
    exponent = jnp.where(point_mask[None, :], (f[:, None] + g[None, :] - cost) / eps, -jnp.inf)
    plan = jnp.exp(jnp.minimum(exponent, common.MAX_EXPONENT)) * alpha[:, None] * beta[None, :]
    point = jnp.sum(beta * _divergence(plan.sum(axis=0) - 1.0, hyper.d_point))
    pixel = jnp.sum(_divergence(lax.stop_gradient(plan.sum(axis=1)) - alpha, hyper.d_pixel))
    shifted = plan + 1e-20
    entropy = jnp.sum(jnp.where(point_mask[None, :], shifted * jnp.log(shifted), 0.0)) / (
        alpha.size * jnp.sum(beta)
    )
    return jnp.stack([ot, point, pixel, entropy])


def dense_terms(density, points, point_mask, f, g, hyper):
    """GL terms ``[B, 4]`` = (ot, point, pixel, entropy), differentiated by JAX autodiff."""
    f, g = lax.stop_gradient(f), lax.stop_gradient(g)
    return jax.vmap(lambda d, x, m, f_b, g_b: image_terms(d, x, m, f_b, g_b, hyper))(
        density, points, point_mask, f, g
    )
