"""gga_jax: where to put adapters in a pretrained transformer, and training them."""

__version__ = "0.1.0"
