"""Spatial Transformer Networks (Jaderberg et al., NIPS 2015) in JAX/Flax.

Layers, bottom to top (each imports only from those below):
  1. `stn.transforms`, `stn.sampling`: pure grid generators and samplers.
  2. `stn.layers`: Flax NNX localisation nets and the `SpatialTransformer` module.
  3. `stn.experiments.models`: the paper's networks.
  4. `stn.experiments.data`: digit sources, distortions, batching.
  5. `stn.experiments.training`, `stn.experiments.evaluation`, `stn.experiments.sweeps`, `stn.experiments.results.tables` (with `stn.experiments.results.collect`,
     `stn.experiments.results.summary`, `stn.experiments.results.render`), `stn.experiments.results.figures` (charts), `stn.experiments.pictures` (pictures).
"""
