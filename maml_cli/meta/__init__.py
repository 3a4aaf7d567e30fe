"""The meta-learning math: pure functions of parameters, tasks and keys. Nothing here touches disk."""
