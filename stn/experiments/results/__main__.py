"""`python -m stn.experiments.results`: the same command line as `stn.experiments.results.tables`."""
from absl import app

from stn.experiments.results import tables

if __name__ == "__main__":
    tables.define_flags()
    app.run(tables.main)
