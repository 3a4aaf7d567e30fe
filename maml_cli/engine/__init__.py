"""What a config builds and runs: the experiment, training, scoring, evaluation and adaptation."""
