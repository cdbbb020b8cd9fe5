"""What notebook 01 shows of a data build: its statistics as a table and the length histograms."""
from __future__ import annotations


def stats_table(stats: dict):
    """Documents, sentences, words and tokens before and after 1-in-N sampling, as a DataFrame."""
    import pandas as pd
    rows = {"documents": (stats["documents"], stats["documents"]),
            "sentences": (stats["sentences_before_sampling"], stats["sentences_after_sampling"]),
            "words": (stats["words_before_sampling"], stats["words_after_sampling"]),
            "tokens": (stats["tokens_before_sampling_estimate"], stats["tokens_after_sampling"])}
    t = pd.DataFrame(rows, index=["before sampling", "after sampling"]).T
    t["kept"] = (t["after sampling"] / t["before sampling"]).round(3)
    return t


def length_histograms(stats: dict):
    """Figure: sentence length (tokens) and block length (non-pad tokens) histograms from ``stats``."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key, title in zip(axes, ("sentence_length_tokens_hist", "block_length_tokens_hist"),
                              ("sampled sentences", f"blocks (max_seq_length {stats['max_seq_length']})")):
        h = stats[key]
        if h["counts"]:
            ax.stairs(h["counts"], h["edges"], fill=True)
        ax.set(xlabel="tokens", ylabel="count", title=title, yscale="log")
    fig.tight_layout()
    return fig
