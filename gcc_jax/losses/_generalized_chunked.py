"""GL on the CPU: one image at a time, points in chunks, one ``exp`` per matrix entry.

The dense formulation (``_generalized``) vmaps over the batch and works on the full
``cells × M`` matrix of every image, ``M`` being the padded number of points. On a CPU that is
wasteful three ways, and this module removes all three without changing the result beyond
float32 round-off:

1. **Padding.** Images are processed one after the other (``lax.map``), with their real points
   moved to the front; every pass over the points runs over ``⌈m / K⌉`` chunks of ``K`` points,
   a *dynamic* trip count, so an image with 37 heads costs 64 columns, not ``M``.
2. **Two log-sum-exps per update.** The symmetric update needs ``LSE_k(log α_k + F_k/ε − C_kj/ε)``
   for every point and ``LSE_j(log β_j + G_j/ε − C_kj/ε)`` for every cell. Both are sums of the
   same matrix ``E_kj = exp((F_k + G_j − C_kj)/ε)`` (the "absorbed" kernel: the current
   potentials are its stabiliser)::

       LSE_k(...)_j = log Σ_k α_k E_kj − G_j/ε        LSE_j(...)_k = log Σ_j β_j E_kj − F_k/ε

   so one ``exp`` per entry and two matrix-vector products replace two max-shifted passes. The
   potentials keep ``E`` well scaled, but the sums are checked (finite, above ``1e-30``) and any
   sweep that fails falls back to the max-shifted log-sum-exp, so results never depend on luck.
3. **Autodiff of the terms.** The potentials are constants, so every GL term is an explicit
   function of ``α`` with a closed-form gradient; one pass over the chunks computes the values
   and the gradients together (a ``custom_vjp``), instead of a forward pass that stores the plan
   and a backward pass that reads it again.

Memory is bounded by one image's ``M × n`` cost matrix plus ``K × n`` chunk temporaries,
independent of the batch size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from gcc_jax.losses import _generalized_common as common

__all__ = ["chunked_potentials", "chunked_terms"]

# Points per chunk: [K, n] temporaries stay in cache for n up to ~64×64 cells (measured:
# K = 32 beat 16, 64 and 128 for 64×64 maps on a 2-core CPU).
CHUNK = 32
# Sums below this (or non-finite) are treated as under/overflowed: the sweep is redone exactly.
_TINY = 1e-30


def _num_chunks(point_mask):
    return (jnp.sum(point_mask, dtype=jnp.int32) + CHUNK - 1) // CHUNK


def _pad_to_chunks(x, value=0.0):
    """Pads the leading (points) axis of ``x`` to a multiple of the chunk size."""
    extra = -x.shape[0] % CHUNK
    widths = [(0, extra)] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, widths, constant_values=value)


def _exact_sweep(eps, f, g, log_alpha, log_beta, cost_t, num_chunks):
    """Max-shifted log-sum-exp sweep: ``(LSE over cells [M], LSE over points [n])``."""
    h_cells = log_alpha + f / eps

    def chunk(c, state):
        lse_points, lse_cells = state
        scaled = lax.dynamic_slice_in_dim(cost_t, c * CHUNK, CHUNK) / eps
        h_points = lax.dynamic_slice_in_dim(log_beta, c * CHUNK, CHUNK) + (
            lax.dynamic_slice_in_dim(g, c * CHUNK, CHUNK) / eps
        )
        over_cells = jax.nn.logsumexp(h_cells[None, :] - scaled, axis=1)
        over_points = jax.nn.logsumexp(h_points[:, None] - scaled, axis=0)
        return (
            lax.dynamic_update_slice_in_dim(lse_points, over_cells, c * CHUNK, 0),
            jnp.logaddexp(lse_cells, over_points),
        )

    n = cost_t.shape[1]
    init = (jnp.zeros_like(g), jnp.full((n,), -jnp.inf, cost_t.dtype))
    return lax.fori_loop(0, num_chunks, chunk, init)


def _sweep(eps, f, g, alpha, beta, log_alpha, log_beta, cost_t, num_chunks):
    """One symmetric geomloss update, before dampening.

    Returns:
      ``(G', F')`` with ``G'_j = −ε LSE_k(log α_k + F_k/ε − C_kj/ε)`` ``[M]`` and
      ``F'_k = −ε LSE_j(log β_j + G_j/ε − C_kj/ε)`` ``[n]``.
    """
    inv_eps = 1.0 / eps

    def chunk(c, state):
        col_sums, row_sums = state
        kernel = jnp.exp(
            (f[None, :] + lax.dynamic_slice_in_dim(g, c * CHUNK, CHUNK)[:, None]
             - lax.dynamic_slice_in_dim(cost_t, c * CHUNK, CHUNK)) * inv_eps
        )  # fmt: skip
        return (
            lax.dynamic_update_slice_in_dim(col_sums, kernel @ alpha, c * CHUNK, 0),
            row_sums + lax.dynamic_slice_in_dim(beta, c * CHUNK, CHUNK) @ kernel,
        )

    n = cost_t.shape[1]
    col_sums, row_sums = lax.fori_loop(
        0, num_chunks, chunk, (jnp.ones_like(g), jnp.zeros((n,), cost_t.dtype))
    )
    sound = jnp.all((jnp.isfinite(col_sums) & (col_sums > _TINY)) | (beta == 0)) & jnp.all(
        jnp.isfinite(row_sums) & (row_sums > _TINY)
    )

    def absorbed(_):
        return (
            g - eps * jnp.log(jnp.where(beta > 0, col_sums, 1.0)),
            f - eps * jnp.log(row_sums),
        )

    def exact(_):
        lse_points, lse_cells = _exact_sweep(eps, f, g, log_alpha, log_beta, cost_t, num_chunks)
        return -eps * lse_points, -eps * lse_cells

    return lax.cond(sound, absorbed, exact, None)


def _image_potentials(alpha, cost_t, point_mask, diameter, hyper):
    """Reference ε-scaling loop of one image; ``cost_t`` ``[M', n]`` has its real points first.

    Returns:
      ``(F [n], G [M'])``.
    """
    beta = point_mask.astype(alpha.dtype)
    log_alpha, log_beta = common.log_weights(alpha), common.log_weights(beta)
    num_chunks = _num_chunks(point_mask)
    num_steps, epsilon = common.epsilon_schedule(diameter, hyper)

    def sweep(eps, f, g):
        return _sweep(eps, f, g, alpha, beta, log_alpha, log_beta, cost_t, num_chunks)

    eps0 = epsilon(jnp.int32(0))
    g, f = sweep(eps0, jnp.zeros_like(alpha), jnp.zeros_like(beta))
    f, g = common.dampening(eps0, hyper) * f, common.dampening(eps0, hyper) * g

    def body(state):
        i, f, g = state
        eps = epsilon(i)
        g_new, f_new = sweep(eps, f, g)
        lam = common.dampening(eps, hyper)
        return i + 1, 0.5 * (f + lam * f_new), 0.5 * (g + lam * g_new)

    _, f, g = lax.while_loop(lambda s: s[0] < num_steps, body, (jnp.int32(0), f, g))
    g, f = sweep(hyper.eps, f, g)
    lam = common.dampening(hyper.eps, hyper)
    return lam * f, jnp.where(point_mask, lam * g, 0.0)


def _sorted_image(density, points, point_mask, hyper):
    """One image with its real points first: ``(order, cells, points, mask, cost_t)``.

    ``cost_t`` is the transposed cost ``[M', n]``, its rows padded to a multiple of the chunk.
    """
    order = jnp.argsort(~point_mask, stable=True)
    points, point_mask = points[order], point_mask[order]
    cells, points = common.image_geometry(*density.shape, points, point_mask, hyper)
    cost_t = _pad_to_chunks(hyper.cost(cells, points, scale=hyper.scale).T)
    return order, cells, points, point_mask, cost_t


def chunked_potentials(density, points, point_mask, hyper):
    """``(F [B, n], G [B, M])`` of the reference solver, one image at a time.

    Args:
      density: ``[B, h, w]``; every image has at least one real point.
      points: ``[B, M, 2]`` crop pixels.
      point_mask: ``[B, M]``.
      hyper: the static hyper-parameters.
    """
    m = points.shape[1]

    def one(args):
        d, x, mask = args
        order, cells, x, mask, cost_t = _sorted_image(d, x, mask, hyper)
        f, g = _image_potentials(
            d.reshape(-1), cost_t, _pad_to_chunks(mask, False), common.diameter(cells, x, mask),
            hyper,
        )  # fmt: skip
        return f, jnp.zeros((m,), g.dtype).at[order].set(g[:m])

    return lax.map(one, (density, points, point_mask))


def _divergence_and_slope(residual, kind):
    if kind == "l1":
        return jnp.abs(residual), jnp.sign(residual)
    return residual * residual, 2.0 * residual


def _image_terms_and_gradients(alpha, f, g, cost_t, point_mask, hyper):
    """GL terms of one image and their gradients with respect to ``α`` (potentials constant).

    With ``E_kj = exp((F_k + G_j − C_kj)/ε)`` on real points and ``Π_kj = α_k E_kj``::

      ∂ot/∂α_k      = (ρ + ε/2)(1 − e^{−F_k/ρ})
      ∂point/∂α_k   = Σ_j d'(Σ_k' Π_k'j − 1) E_kj
      ∂pixel/∂α_k   = −d'(sg(Σ_j Π_kj) − α_k)
      ∂entropy/∂α_k = Σ_j E_kj (log(Π_kj + 1e-20) + 1) / (n m)

    Returns:
      ``(values [4], gradients [4, n])`` for ``(ot, point, pixel, entropy)``.
    """
    eps, rho = hyper.eps, hyper.rho
    beta = point_mask.astype(alpha.dtype)
    n = alpha.shape[0]

    def chunk(c, state):
        point, entropy, d_point, d_entropy, row_sums = state
        b = lax.dynamic_slice_in_dim(beta, c * CHUNK, CHUNK)
        exponent = (
            f[None, :] + lax.dynamic_slice_in_dim(g, c * CHUNK, CHUNK)[:, None]
            - lax.dynamic_slice_in_dim(cost_t, c * CHUNK, CHUNK)
        ) / eps  # fmt: skip
        kernel = jnp.exp(jnp.minimum(exponent, common.MAX_EXPONENT)) * b[:, None]  # [K, n]
        received, slope = _divergence_and_slope(kernel @ alpha - 1.0, hyper.d_point)
        plan = kernel * alpha[None, :] + 1e-20
        log_plan = jnp.log(plan)
        return (
            point + jnp.sum(b * received),
            entropy + jnp.sum(b[:, None] * plan * log_plan),
            d_point + (b * slope) @ kernel,
            d_entropy + jnp.sum(kernel * (log_plan + 1.0), axis=0),
            row_sums + b @ kernel,
        )

    zeros = jnp.zeros((n,), alpha.dtype)
    zero = jnp.zeros((), alpha.dtype)
    point, entropy, d_point, d_entropy, row_sums = lax.fori_loop(
        0, _num_chunks(point_mask), chunk, (zero, zero, zeros, zeros, zeros)
    )
    decay = 1.0 - jnp.exp(jnp.minimum(-f / rho, common.MAX_EXPONENT))
    ot = (rho + eps / 2.0) * (
        jnp.sum(alpha * decay)
        + jnp.sum(beta * (1.0 - jnp.exp(jnp.minimum(-g / rho, common.MAX_EXPONENT))))
    )
    pixel, pixel_slope = _divergence_and_slope(alpha * row_sums - alpha, hyper.d_pixel)
    scale = 1.0 / (n * jnp.sum(beta))
    values = jnp.stack([ot, point, jnp.sum(pixel), entropy * scale])
    gradients = jnp.stack([(rho + eps / 2.0) * decay, d_point, -pixel_slope, d_entropy * scale])
    return values, gradients


def _terms_fwd(density, points, point_mask, f, g, hyper):
    def one(args):
        d, x, mask, f_b, g_b = args
        order, _, _, mask, cost_t = _sorted_image(d, x, mask, hyper)
        return _image_terms_and_gradients(
            d.reshape(-1), f_b, _pad_to_chunks(g_b[order]), cost_t, _pad_to_chunks(mask, False),
            hyper,
        )  # fmt: skip

    values, gradients = lax.map(one, (density, points, point_mask, f, g))
    return values, gradients.reshape(*gradients.shape[:2], *density.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def chunked_terms(density, points, point_mask, f, g, hyper):
    """GL terms ``[B, 4]`` = (ot, point, pixel, entropy), with their gradient written by hand.

    ``density`` ``[B, h, w]`` is the only input differentiated (the references treat the points
    as data and the potentials ``f`` ``[B, n]``, ``g`` ``[B, M]`` as constants); every image has
    at least one real point.
    """
    return _terms_fwd(density, points, point_mask, f, g, hyper)[0]


def _terms_bwd(hyper, gradients, cotangent):
    del hyper
    d_density = jnp.einsum("bt,bt...->b...", cotangent, gradients)
    return d_density, None, None, None, None


chunked_terms.defvjp(_terms_fwd, _terms_bwd)
