"""Layer 2, data: sources and the offline mirror, corpus cleaning and sampling, tokenizers and packing into token
blocks, the processed-data cache, MLM masking, GLUE loading. Never imports :mod:`dwt_lib.models`.

The names notebook 01 uses (``from dwt_lib import data``) are gathered here."""
from dwt_lib.data.masking import attention_mask, mask_tokens  # noqa: F401
from dwt_lib.data.prepare import data_hash, prepare_pretraining_data  # noqa: F401
from dwt_lib.data.sources import sources_table  # noqa: F401
from dwt_lib.data.tokens import vocab_size  # noqa: F401
from dwt_lib.data.views import length_histograms, stats_table  # noqa: F401
