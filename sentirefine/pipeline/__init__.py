"""The loop: stages of an iteration, who gets relabelled (policy), sequential retraining."""
