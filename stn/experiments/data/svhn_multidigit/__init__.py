"""SVHN format 1 as multi-digit sequences: a TF-free tensorflow-datasets builder.

Importing this package registers the builder `svhn_multidigit` (configs `64px`, `128px`).
"""
from stn.experiments.data.svhn_multidigit.svhn_multidigit import (  # noqa: F401
    MAX_DIGITS, SvhnMultidigit, SvhnMultidigitConfig, iter_examples)
