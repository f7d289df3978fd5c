"""NUTS: ldpk's sampling loop over numpyro's kernel on a flat unconstrained vector, chains in
parallel over devices or one after another in compiled blocks, started from the MAP with
the Laplace covariance as the initial inverse mass matrix."""

from __future__ import annotations

import time
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.hmc import hmc

from ldpk._compiled import jit
from ldpk.inference._mode import _Mode
from ldpk.inference._predict import _draw_bytes, _draws_per_chunk, _over_draws
from ldpk.inference._reparam import _centred_parameters, _Centring
from ldpk.inference._settings import FitOptions
from ldpk.population import PopulationModel
from ldpk.solve import choose_kernel


class _Kernel(NamedTuple):
    """NUTS on one flat vector of the unconstrained parameters, through numpyro's public
    functional API (:func:`numpyro.infer.hmc.hmc` with ``potential_fn_gen``): the data are
    arguments of the potential (``potential_fn_gen(*data)``, compiled once per design), not
    constants. numpyro's model path keeps a dict of sites, whose per-site bookkeeping in every
    leapfrog step took as long as the gradient itself on small models (one-compartment
    benchmark: 7.0 s against 3.7 s for 4 x 2000 iterations). ``init(key, warmup, x, data)``
    starts a chain at ``x``; ``sample(state, data)`` advances it one iteration (warm-up
    adaptation included while ``state.i < warmup``). ``hmc`` keeps the warm-up schedule in
    its closure, set by ``init``: trace ``init`` before ``sample``."""

    init: Any
    sample: Any


def _kernel(potential_fn_gen: Any, opts: FitOptions, inverse_mass_matrix: Any) -> _Kernel:
    """The NUTS kernel of ``opts`` (target acceptance, tree depths, diagonal or dense
    metric) over the potential of ``potential_fn_gen``, started from
    ``inverse_mass_matrix`` (None: the identity)."""
    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_fn_gen, algo="NUTS")
    depth = opts.max_tree_depth
    if opts.warmup_max_tree_depth is not None:
        depth = (opts.warmup_max_tree_depth, opts.max_tree_depth)

    def init(key: Any, warmup: int, x: Any, data: tuple) -> Any:
        key, _ = jax.random.split(key)  # as numpyro's NUTS.init: the same draws as before
        return init_kernel(
            x, warmup, inverse_mass_matrix=inverse_mass_matrix, dense_mass=opts.dense_mass,
            target_accept_prob=opts.target_accept, max_tree_depth=depth, model_args=data,
            rng_key=key,
        )  # fmt: skip

    def sample(state: Any, data: tuple) -> Any:
        return sample_kernel(state, model_args=data)

    return _Kernel(init, sample)


def _nuts(pm: PopulationModel, data: tuple, key: Any, opts: FitOptions, mode: _Mode) -> tuple:
    """NUTS, each chain started from its own draw of the Laplace approximation at the MAP (or
    the MAP plus N(0, 0.1^2) jitter in the unconstrained space). Chains run in parallel when
    there are as many devices (LDPK_HOST_DEVICES on a CPU), else one after another.
    Returns the constrained draws, the sample statistics, the parameters sampled centred and
    the timings of warm-up and sampling."""
    parallel = 1 < opts.chains <= jax.local_device_count()
    centred = _centred_parameters(pm, mode, opts.parameterization)
    centring = _Centring.of(pm, mode, centred)

    reused = _reused_gradient(mode.value_and_grad)

    def potential_fn_gen(*data: Any) -> Any:
        def potential(x: Any) -> Any:
            return reused(x, data)

        if centring is None:
            return potential
        return lambda w: potential(centring.to_noncentred(w)) + centring.log_det(w)

    kernel = _kernel(potential_fn_gen, opts, _initial_inverse_mass(mode, centring, opts.dense_mass))  # fmt: skip
    k_init, k_run = jax.random.split(key)
    init = _dispersed(mode, k_init, opts.chains)
    if centring is not None:
        init = jit(jax.vmap(centring.to_centred))(init)
    flat, stats, timings = _run_chains(pm, kernel, k_run, init, data, opts, parallel)
    chains, draws = flat.shape[:2]
    if centring is not None:
        flat = np.asarray(jit(jax.vmap(jax.vmap(centring.to_noncentred)))(flat))

    def constrained(x: dict, key: Any, data: tuple) -> dict:
        sites = jax.vmap(lambda v: mode.postprocess(mode.unravel(v)))(x["x"])
        return {k: v for k, v in sites.items() if not k.startswith("obs_")}

    x = {"x": jnp.asarray(flat.reshape(chains * draws, -1))}
    samples = _over_draws(constrained, x, key, data, _draws_per_chunk(pm))
    samples = {k: np.asarray(v).reshape(chains, draws, *v.shape[1:]) for k, v in samples.items()}
    return samples, stats, centred, timings


def _reused_gradient(value_and_grad: Any) -> Any:
    """The potential (x, data) -> U whose gradient in x is the second output of
    ``value_and_grad`` (data get none): NUTS's start and its transitions evaluate the jaxpr
    that the MAP search traced and differentiated once per fit. Left to differentiate the
    potential itself, each of the two traced the model and its solve again (a jitted
    function is traced again inside ``shard_map``) and linearised it: 1.5 s of a 6.5 s fit
    of the one-compartment Stan benchmark in a new process. Reverse mode only (a custom
    VJP)."""

    @jax.custom_vjp
    def potential(x: Any, data: tuple) -> Any:
        return value_and_grad(x, data)[0]

    def forward(x: Any, data: tuple) -> tuple:  # (U, residual: the gradient)
        return value_and_grad(x, data)

    def backward(grad: Any, cotangent: Any) -> tuple:
        return cotangent * grad, None

    potential.defvjp(forward, backward)
    return potential


#: The per-iteration fields of the sampler's state kept for sample_stats: name -> getter.
_STAT_FIELDS = {
    "diverging": lambda s: s.diverging,
    "energy": lambda s: s.energy,
    "n_steps": lambda s: s.num_steps,
    "acceptance_rate": lambda s: s.accept_prob,
    "step_size": lambda s: s.adapt_state.step_size,
}


def _run_chains(pm: PopulationModel, kernel: _Kernel, key: Any, init: Any, data: tuple, opts: FitOptions, parallel: bool) -> tuple:  # fmt: skip
    """Run ``opts.chains`` chains of ``kernel`` from the starting points ``init`` (chains,
    unconstrained size): ``opts.warmup`` iterations of warm-up (step size and mass matrix
    adaptation), then ``opts.samples`` draws. Chains run in parallel, one per device, when
    ``parallel`` (see :func:`_over_chains`), else one after another.

    ldpk's own loop over numpyro's NUTS kernel rather than ``numpyro.infer.MCMC``: the loop
    is compiled per fit, so its compiled code is freed with the fit (numpyro's sampling loop
    is a module-level jit that kept every fit's sampler alive, about 35 MB per fit of the
    theophylline model); each chain's start (its first gradient) is compiled too (numpyro
    evaluated it op by op when chains ran one after another: over 40 minutes for the CAR-T
    ODE model); warm-up and sampling are timed apart; the warm-up's own statistics are kept
    (``stats["warmup"]``); and parallel chains show progress too. Iterations run in
    compiled blocks of 1/25 of each phase (one block per phase without progress bars), the
    block length a traced argument, so one compilation serves every block.

    Returns the draws (chains, samples, size) and the sample statistics (chains, samples)
    as NumPy arrays, and the timings ``warmup_s`` and ``sampling_s`` (seconds)."""
    n = opts.warmup + opts.samples
    size = init.shape[-1]

    def start(key: Any, x: Any, data: tuple) -> tuple:
        state = kernel.init(key, opts.warmup, x, data)
        record = {"z": jnp.zeros((n, size), x.dtype)}
        record |= {k: jnp.zeros(n, jnp.result_type(get(state))) for k, get in _STAT_FIELDS.items()}  # fmt: skip
        return state, record

    def advance(state: Any, record: dict, data: tuple, steps: Any) -> tuple:
        def body(_: Any, carry: tuple) -> tuple:
            state, record = carry
            state = kernel.sample(state, data)
            row = {"z": state.z} | {k: get(state) for k, get in _STAT_FIELDS.items()}
            record = {k: record[k].at[state.i - 1].set(row[k]) for k in record}
            return state, record

        return jax.lax.fori_loop(0, steps, body, (state, record))

    if parallel:
        start_c = _over_chains(start, opts.chains, (True, True, False))
        advance_c = _over_chains(advance, opts.chains, (True, True, False, False))
        runs = [(jax.random.split(key, opts.chains), init)]
    else:
        start_c, advance_c = jit(start), jit(advance, donate_argnums=1)
        runs = list(zip(jax.random.split(key, opts.chains), init, strict=True))
    most = _parallel_block(pm, opts.chains) if parallel else None
    blocks = [_blocks(opts.warmup, opts.progress, most), _blocks(opts.samples, opts.progress, most)]  # fmt: skip
    bar = None
    if opts.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n * len(runs), unit="it", desc="warmup", leave=False)
    timings = {"warmup_s": 0.0, "sampling_s": 0.0}
    records = []
    for run_key, x in runs:
        t0 = time.perf_counter()
        state, record = start_c(run_key, x, data)
        for phase, lengths in zip(timings, blocks, strict=True):
            if bar is not None:
                bar.set_description(phase.removesuffix("_s"))
            for steps in lengths:
                state, record = advance_c(state, record, data, jnp.asarray(steps))
                jax.block_until_ready(state.i)
                if bar is not None:
                    bar.update(steps)
            timings[phase] += time.perf_counter() - t0
            t0 = time.perf_counter()
        records.append(jax.device_get(record))
    if bar is not None:
        bar.close()
    record = {k: np.concatenate([r[k] if parallel else r[k][None] for r in records]) for k in records[0]}  # fmt: skip
    warm = {k: v[:, : opts.warmup] for k, v in record.items() if k != "z"}
    stats = {k: v[:, opts.warmup :] for k, v in record.items() if k != "z"}
    for s in (warm, stats):
        s["tree_depth"] = np.floor(np.log2(s["n_steps"] + 1)).astype(int)
    stats["warmup"] = warm
    return record["z"][:, opts.warmup :], stats, timings


def _over_chains(f: Any, chains: int, mapped: tuple[bool, ...]) -> Any:
    """``f`` of one chain, compiled to run ``chains`` chains at once, one per device: the
    arguments flagged in ``mapped`` carry a leading chain axis, the others are shared.
    A shard_map under jit rather than ``jax.pmap``: pmap's cache of its shard_map (a weak key
    dict whose values hold their own keys) kept every fit's sampler alive."""
    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.asarray(jax.local_devices()[:chains]), ("chain",))

    def local(*args: Any) -> Any:  # each device's shard: one chain
        one = (jax.tree.map(lambda v: v[0], a) if m else a for a, m in zip(args, mapped, strict=True))  # fmt: skip
        return jax.tree.map(lambda v: v[None], f(*one))

    specs = tuple(PartitionSpec("chain") if m else PartitionSpec() for m in mapped)
    # check_vma off: numpyro's tree building carries per-chain and shared values together
    return jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=PartitionSpec("chain"), check_vma=False))  # fmt: skip


#: Fewest iterations per compiled block when chains run in parallel. XLA's CPU runtime keeps
#: memory of every iteration of a multi-device while loop until the loop returns: the MSC
#: study (4 chains over 4 host devices, exact kernel) peaked at 6.6 GB in 50 + 50
#: iterations run as two blocks and 12.3 GB in 100 + 100; in blocks of 10 at 2.4 GB, of 5
#: at 1.5 GB, no slower. One chain on one device does not grow (1.0 GB).
PARALLEL_BLOCK = 5
#: Memory (bytes) that one block of parallel chains may keep (see :func:`_parallel_block`).
PARALLEL_BLOCK_BYTES = 256 * 2**20


def _parallel_block(pm: PopulationModel, chains: int) -> int:
    """Most iterations per compiled block when ``chains`` chains run in parallel: as many as
    keep an estimate of the memory held for them under :data:`PARALLEL_BLOCK_BYTES`, at least
    :data:`PARALLEL_BLOCK`; ODE kernels always :data:`PARALLEL_BLOCK` (their memory per
    iteration follows the solver's steps). The estimate, 15 × :func:`_draw_bytes` of the
    solved compartments per chain and iteration, covers the
    growth measured with 4 chains (peak memory in blocks of 12-60 iterations against blocks
    of 5): about 2.5 × the formula on the MSC study (94 MB per iteration), 12 × on the EV
    study (87 MB), 5 × on the CAR-T study (1.7 MB); the one-compartment Stan benchmark did
    not grow. Each block costs a dispatch to every device and a synchronisation (about
    2.5 ms on the 2-core CPU): that benchmark drew its 1000 samples in 0.84 s in blocks of 5
    and 0.39 s in one block."""
    if choose_kernel(pm.model, pm.method) == "ode":
        return PARALLEL_BLOCK
    solved = len(pm.model.states_for(pm.dataset.outputs_observed()))
    per_iteration = 15 * chains * _draw_bytes(pm, solved)
    return max(PARALLEL_BLOCK, PARALLEL_BLOCK_BYTES // per_iteration)


def _blocks(n: int, progress: bool, most: int | None = None, parts: int = 25) -> list[int]:
    """Iteration counts of the compiled blocks that run ``n`` iterations: one block, or
    about ``parts`` with progress bars; none longer than ``most``."""
    size = -(-n // parts) if progress else n
    size = max(1, min(size, most or size))
    return [size] * (n // size) + ([n % size] if n % size else [])


def _initial_inverse_mass(mode: _Mode, centring: _Centring | None, dense: bool) -> Any:
    """The Laplace covariance at the MAP (in the sampler's coordinates) as the starting
    inverse mass matrix, its diagonal unless ``dense``; None (the identity) without one.
    Warm-up adapts it from the first window on; starting from the identity, parameters whose
    posterior scales differ by orders of magnitude kept the first window's steps tiny (EV
    study: trees of 127-767 leapfrog steps for 75 iterations)."""
    if mode.cov is None:
        return None
    cov = np.asarray(mode.cov)
    if centring is not None:
        J = np.asarray(jit(jax.jacfwd(centring.to_centred))(mode.flat))
        cov = J @ cov @ J.T
    diag = np.diag(cov)
    if not (np.all(np.isfinite(cov)) and np.all(diag > 0)):
        return None
    return jnp.asarray(cov if dense else diag)


def _dispersed(mode: _Mode, key: Any, n: int) -> Any:
    """n starting points around the MAP (unconstrained, flat)."""
    if mode.cov is not None:
        draw = partial(jax.random.multivariate_normal, shape=(n,))
        return jit(draw)(key, mode.flat, jnp.asarray(mode.cov))
    return jit(lambda key, x: x + 0.1 * jax.random.normal(key, (n, x.size)))(key, mode.flat)
