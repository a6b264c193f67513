"""The paper's networks, by task (layer 3). `get_model(config.model, input_size, rngs)`."""
from stn.models.mnist import MODEL_NAMES, get_model, num_params

__all__ = ["MODEL_NAMES", "get_model", "num_params"]
