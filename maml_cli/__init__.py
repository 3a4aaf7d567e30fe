"""maml-cli: MAML and its family in JAX. From Python (the console scripts stand on the same API):

    import maml_cli as mc
    cfg = mc.compose("sinusoid_tiny", ["train.steps=200"])
    run = mc.train(cfg, run_dir="runs/x")
    record = mc.load_run("runs/x").evaluate(episodes=200)

The names are loaded on first use, so importing a submodule (``maml_cli.meta``) stays light.
"""

__version__ = "0.1.0"

_API = ("compose", "train", "load_run", "Run")
__all__ = ["compose", "train", "load_run", "Run", "Learner", "UserError", "__version__"]


def __getattr__(name):
    if name in _API:
        from maml_cli import api

        return getattr(api, name)
    if name == "Learner":
        from maml_cli.engine.adapt import Learner

        return Learner
    if name == "UserError":
        from maml_cli.errors import UserError

        return UserError
    raise AttributeError(f"module 'maml_cli' has no attribute {name!r}")
