"""Small helpers for the notebooks' exercises (issue 20): collapsed answers and the premise line.

The mechanics themselves (a DWT step, the remapping, the growth gate) are written out in the notebooks' cells;
this module only holds what would otherwise be repeated in every notebook:

- :func:`answer` shows an exercise's answer as a collapsed ``<details>`` block. Its text is built in the
  notebook from the numbers the notebook just computed, so an executed copy quotes its own profile's numbers
  (a mini copy never quotes smoke's).
- :func:`premise_note` is the one line a study notebook prints before anything runs when the paper's premise
  (every teacher worse than the standalone student) does not hold at this profile, read from the teacher-quality
  result of an earlier run; nothing when there is no result yet, or when it holds.
- :func:`yours` picks the student's answer to a code exercise, or the library's when the stub is still empty, so
  the notebook runs headless (papermill, nbval) before anyone has written a line.
"""
from __future__ import annotations

import html

from ..config import Config
from ..core.paths import PARAMS_DIR
from ..runs.registry import read_json_or_none
from ..studies.premise import premise
from ..studies.results import result_path


def answer(text: str, summary: str = "Answer") -> None:
    """Display ``text`` (plain text; ``<code>``, ``<b>``, ``<br>`` and ``<pre>`` tags allowed) collapsed under
    ``summary``. In plain-text views (nbconvert --to script, a terminal) only a placeholder shows."""
    from IPython.display import display
    body = text.replace("\n\n", "<br><br>")
    display({"text/html": f"<details><summary><b>{html.escape(summary)}</b> (click to open)</summary>"
                          f"<div style='margin: 0.4em 0 0 1.2em'>{body}</div></details>",
             "text/plain": f"[{summary}: collapsed; open the notebook in JupyterLab]"}, raw=True)


def yours(mine, reference, what: str = "your code"):
    """``mine`` when the exercise has been done (not None), else ``reference``, saying which one is checked."""
    if mine is None:
        print(f"({what} is still the stub: the check below runs on the library's result. Fill it in and rerun.)")
        return reference
    print(f"checking {what}")
    return mine


def show_premise_note(cfg: Config) -> None:
    """Print :func:`premise_note` when there is something to say; print nothing otherwise."""
    note = premise_note(cfg)
    if note:
        print(note)


def premise_note(cfg: Config) -> str:
    """One line when this profile's teacher-quality result says the paper's premise fails, else ''."""
    res = read_json_or_none(result_path(cfg, "teacher_quality"))
    if not res:
        return ""
    try:
        p = premise(res)
    except (KeyError, TypeError, ValueError):
        return ""
    if p["holds"]:
        return ""
    name = lambda n: "student" if n == "student" else n[8:].replace("_", " ") + " teacher"  # noqa: E731
    bad = [g for g in p["gaps"] if not g["ok"]]
    g = bad[0]
    why = (f"the {name(g['higher'])} beats the {name(g['lower'])} by {-g['gap']:.3f} nats" if g["gap"] <= 0 else
           f"the {name(g['higher'])} trails the {name(g['lower'])} by only {g['gap']:.3f} nats")
    if g["gap"] > 0 and p["required_gap"] != p["required_gap"]:
        why += " (one pre-training seed: no spread to compare with)"
    more = f" (+{len(bad) - 1} more gap(s))" if len(bad) > 1 else ""
    src = PARAMS_DIR / f"{cfg.profile}.yaml"
    probed = src.is_file() and "probe" in src.read_text(encoding="utf-8").lower()   # the profile lists its probes
    return (f"Premise check ({cfg.profile}, from results/teacher_quality.json): the paper's premise does not hold "
            f"here, {why}{more}; read the results below with that in mind."
            + (f" What was tried for this profile's recipe, and what each lever gave: the comments in "
               f"params/{cfg.profile}.yaml and the README's Results." if probed else ""))
