"""The train state: one plain dict pytree, created here and nowhere else.

  step        int32 ()   number of updates applied
  params      dict       float32 parameters (`nnx.to_pure_dict` of the model's nnx.Param state)
  batch_stats dict       BatchNorm running statistics (pure dict of the nnx.BatchStat state)
  opt_state   optax state over `params`
  bad_step    int32 ()   first step whose loss or gradients were not finite, -1 if none

Parameters are kept as pure dicts of arrays, not nnx.State: every call of the
jitted step flattens and rebuilds the state on the host, and for NNX Variables
that cost ~14 ms per step on the synthetic_cpu model (measured with
jax.profiler), a quarter of the step. `inference.Network.module` puts them back
into an NNX module inside the trace.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from c2f_vol.inference import Network


def create(network: Network, tx: optax.GradientTransformation) -> dict:
    """A fresh state: the network's initial variables, the optimiser's initial slots, step 0."""
    variables = network.init_variables()
    return dict(step=jnp.zeros((), jnp.int32), params=variables["params"], batch_stats=variables["batch_stats"],
                opt_state=tx.init(variables["params"]), bad_step=jnp.full((), -1, jnp.int32))


def abstract(network: Network, tx: optax.GradientTransformation, sharding: jax.sharding.Sharding) -> dict:
    """The state's shapes and dtypes placed with `sharding`, without computing it (a restore template)."""
    shapes = jax.eval_shape(lambda: create(network, tx))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
