"""samples/tour.ipynb runs end to end on the bundled samples (nbclient + ipykernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def test_tour_notebook_runs():
    nbformat = pytest.importorskip("nbformat", reason="nbformat not installed: pip install -e '.[test]'")
    nbclient = pytest.importorskip("nbclient", reason="nbclient not installed: pip install -e '.[test]'")
    pytest.importorskip("ipykernel", reason="ipykernel not installed: pip install -e '.[test]'")
    if not (SAMPLES / "kvm-double-pmi.dat").is_file():
        pytest.skip("samples/kvm-double-pmi.dat missing: run scripts/make_samples.py")
    nb = nbformat.read(SAMPLES / "tour.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(SAMPLES)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("flagged-exits" in h for h in html), "Analysis._repr_html_ shows the flagged exits"
    assert any("image/png" in o.get("data", {}) for o in outputs), "the figures display"
