"""Layer 4, train: the pre-training loop (with or without DWT), fine-tuning on GLUE, step-0 initialisation."""
