"""The console scripts: thin shells over the library (``maml_cli.api``). Each checks its command
line before Hydra creates anything (``shell``), then runs one job and prints what it did.

maml-train -> train, maml-eval -> evaluate, maml-adapt -> adapt, maml-report -> report."""
