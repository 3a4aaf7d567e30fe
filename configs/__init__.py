"""Hydra configs shipped inside the package (see maml_cli/config/schema.py for the schemas)."""
