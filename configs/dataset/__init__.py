"""Hydra configs shipped inside the package (see maml_cli/config.py for the schemas)."""
