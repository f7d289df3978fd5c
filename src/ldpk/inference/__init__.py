"""fit(): NUTS (default), SVI, MAP or the marginal Laplace approximation → :class:`Fit`, whose
posterior is an ArviZ 1.x DataTree.

Laplace is the marginal (integrated) Laplace approximation of NONMEM's LAPLACIAN and TMB: the
subject effects are integrated out by a Laplace approximation about their conditional mode
for each value of the population parameters, and the population parameters get a normal
approximation at the mode of that marginal posterior. (A normal approximation at the joint
mode over population parameters and non-centred subject effects inflates the between-subject
SDs: the effects' N(0, 1) prior pulls them to 0 and ω grows to compensate.)

NUTS starts from the MAP: each chain from its own draw of the Laplace approximation at the mode
(or from the mode with a small jitter where the Hessian is not positive definite), which keeps
chains out of poor local modes such as the ka/k flip-flop of oral absorption models.

One concern per private module, each importing only those listed before it:

- ``_settings``: :class:`FitOptions` and reading them from a config and keywords
- ``_predict``: deterministic sites of draws, chunked evaluation over draws, new-time records
- ``_mode``: the joint MAP (BFGS), its Hessian, degenerate-mode checks
- ``_reparam``: centred / non-centred parameterisation of the subject effects
- ``_hmc``: NUTS: the sampling loop, parallel chains and blocks, starting points, mass matrix
- ``_variational``: SVI and its start
- ``_marginal``: the Laplace approximation at the MAP and the marginal Laplace approximation
- ``_datatree``: conversion of draws to an ArviZ DataTree
- ``_fit``: the :class:`Fit` result and :func:`load_fit`
- ``_driver``: :func:`fit`
"""

# ArviZ loads numpyro lazily; a numpyro submodule imported first through that lazy module left
# numpyro.distributions without its `distribution` attribute, so numpyro.factor failed in
# every fit after `import arviz`. `import numpyro` here, before any submodule of this package
# imports parts of numpyro, loads the whole package first.
import numpyro  # noqa: F401  isort: skip

from ldpk.inference._driver import WeaklyInformedWarning, fit
from ldpk.inference._fit import Fit, load_fit
from ldpk.inference._settings import FitOptions

# isort: split
# Private names that tests and benchmarks import from ``ldpk.inference`` (patch them in the
# submodule that uses them, e.g. ``ldpk.inference._hmc._run_chains``).
from ldpk.inference._hmc import PARALLEL_BLOCK as PARALLEL_BLOCK
from ldpk.inference._hmc import PARALLEL_BLOCK_BYTES as PARALLEL_BLOCK_BYTES
from ldpk.inference._hmc import _blocks as _blocks
from ldpk.inference._hmc import _parallel_block as _parallel_block
from ldpk.inference._hmc import _run_chains as _run_chains
from ldpk.inference._marginal import _Marginal as _Marginal
from ldpk.inference._mode import PRIOR_TAIL as PRIOR_TAIL
from ldpk.inference._mode import _fd_hessian as _fd_hessian
from ldpk.inference._mode import _map as _map
from ldpk.inference._mode import _Mode as _Mode
from ldpk.inference._mode import _prior_extremes as _prior_extremes
from ldpk.inference._predict import CHUNK_BYTES as CHUNK_BYTES
from ldpk.inference._reparam import AUTO_CENTRE_VARIANCE as AUTO_CENTRE_VARIANCE
from ldpk.inference._reparam import _centred_parameters as _centred_parameters
from ldpk.inference._reparam import _Centring as _Centring
from ldpk.inference._settings import GUIDES as GUIDES
from ldpk.inference._settings import METHODS as METHODS
from ldpk.inference._settings import PARAMETERIZATIONS as PARAMETERIZATIONS
from ldpk.inference._variational import MIN_START_OMEGA as MIN_START_OMEGA
from ldpk.inference._variational import _moment_start as _moment_start

__all__ = ["Fit", "FitOptions", "WeaklyInformedWarning", "fit", "load_fit"]
