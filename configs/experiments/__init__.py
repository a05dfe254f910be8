"""The experiment configs (python -m gga_jax.experiments --config=experiments/e1)."""
