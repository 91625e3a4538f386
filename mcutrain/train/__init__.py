"""Float training: checkpoints, pretraining loop, evaluation."""
