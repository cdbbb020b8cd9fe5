"""Layer 2, models: encoder sizes and architectures, the losses (Eq. 1-3), parameter remapping and growth, the
distillation targets. Never imports :mod:`dwt_lib.data`."""
