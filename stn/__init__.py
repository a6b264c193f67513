"""Spatial Transformer Networks (Jaderberg et al., NIPS 2015) in JAX/Flax.

Layers, bottom to top (each imports only from those below):
  1. `stn.transforms`, `stn.sampling`: pure grid generators and samplers.
  2. `stn.layers`: Flax NNX localisation nets and the `SpatialTransformer` module.
  3. `stn.models`: the paper's networks.
  4. `stn.data`: digit sources, distortions, batching.
  5. `stn.training`, `stn.evaluation`, `stn.sweeps`, `stn.tables` (with `stn.results_collect`,
     `stn.sweep_summary`, `stn.results_render`), `stn.figures` (charts), `stn.plots` (pictures).
"""
