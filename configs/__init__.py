"""The configs, shipped in the package as gga_jax.configs (see gga_jax.cli.config_path)."""
