"""c2f_vol: coarse-to-fine volumetric 3D human pose estimation in JAX/Flax."""

__version__ = "0.1.0"
