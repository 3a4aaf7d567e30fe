"""How the math runs on this machine: the plan (devices, processes, batching) and the sharded computations."""
