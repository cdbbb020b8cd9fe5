"""Layer 2, data: sources and the offline mirror, corpus cleaning and sampling, tokenizers, packing into token
blocks, masking, the processed-data cache, GLUE loading. Never imports :mod:`dwt_lib.models`."""
from dwt_lib.data.prepare import (attention_mask, data_hash, length_histograms, mask_tokens,  # noqa: F401
                                  prepare_pretraining_data, stats_table, vocab_size)
