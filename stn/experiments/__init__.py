"""The paper's experiment harness, built on the `stn` library like any user's code.

The library (`stn.sampling`, `stn.transforms`, `stn.kernels`, `stn.boxes`, `stn.layers`,
`stn.backbones`) never imports this package. Bottom to top, each layer imports only from those
below it:

  3. `stn.experiments.models`: the paper's networks, one module per experiment.
  4. `stn.experiments.data`: digit sources, the paper's distortions, batching.
  5. `stn.experiments.tasks` (one `Task` per experiment), `training` (the one training loop),
     `evaluation`, `checkpointing`, `parallel` and `host` (device mesh, several hosts),
     `sweeps`, `results` (collecting runs, tables, charts), `pictures`.

The entry points `train.py`, `eval.py` and `configs/` sit at the repository's top level.
"""
