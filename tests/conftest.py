"""Test-wide JAX settings: implicit rank promotion is an error everywhere."""
import jax

jax.config.update("jax_numpy_rank_promotion", "raise")

import os  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _embedding_cache_in_tmp(tmp_path_factory):
    """Cached embeddings (stn.experiments.embedding_cache) go to a temporary folder, never ~/.cache."""
    previous = os.environ.get("STN_CACHE_DIR")
    os.environ["STN_CACHE_DIR"] = str(tmp_path_factory.mktemp("stn_cache"))
    yield
    if previous is None:
        os.environ.pop("STN_CACHE_DIR", None)
    else:
        os.environ["STN_CACHE_DIR"] = previous
