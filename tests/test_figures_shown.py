"""Every figure a notebook draws is shown in the executed copy (issue 20, item 1).

The cause was pyplot resolving its backend inside ``plt.rc_context``: in a fresh kernel the inline backend then
switched interactive mode on inside the context, the context's exit switched it off, and no later pyplot figure
displayed. The first test runs a real kernel; the second checks committed executed notebooks of profiles whose
outputs come from the current code."""
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _images(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def test_figures_after_the_first_styled_one_still_display(tmp_path):
    nbclient = pytest.importorskip("nbclient")
    cells = ["from dwt_lib.notebook import plots\nimport matplotlib.pyplot as plt\n"
             "with plots.style():\n    fig, ax = plt.subplots()\n    ax.plot([1, 2])",
             "with plots.style():\n    fig, ax = plt.subplots()\n    ax.plot([2, 1])",
             "plt.plot([1, 3])"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert [_images(c) for c in nb.cells] == [1, 1, 1]


# Profiles whose committed notebooks were executed after the fix.
CURRENT = ["laptop", "mini"]


@pytest.mark.parametrize("profile", CURRENT)
def test_every_saved_figure_is_displayed(profile):
    nb_dir = ROOT / "outputs" / profile / "notebooks"
    fig_dir = ROOT / "outputs" / profile / "figures"
    if not nb_dir.is_dir():
        pytest.skip(f"no committed notebooks for {profile}")
    checked = 0
    for path in sorted(nb_dir.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        prefix = path.name.split("_")[0]
        saved = sorted(p.stem for p in fig_dir.glob(f"{prefix}_*.png"))
        shown = sum(_images(c) for c in nb["cells"] if c["cell_type"] == "code")
        assert shown >= len(saved), f"{path.name}: {len(saved)} figures saved ({', '.join(saved)}), {shown} shown"
        checked += len(saved)
    assert checked > 0
