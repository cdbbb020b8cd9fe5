"""Text the studies generate: Markdown tables and the word budget of a summary (a headline, a table, at most ~80
words of prose outside it)."""
from __future__ import annotations


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def prose_words(markdown: str) -> int:
    """Words of a summary outside its tables (the ~80-word budget of a generated summary)."""
    return sum(len(line.split()) for line in markdown.splitlines() if not line.lstrip().startswith("|"))
