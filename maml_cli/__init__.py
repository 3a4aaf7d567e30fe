"""maml-cli: MAML and its family in JAX, driven from the shell."""

__version__ = "0.1.0"
