"""samples/tour.ipynb runs end to end (nbclient + ipykernel) on the bundled samples (or, where they have not been
generated, on a KVM scenario written by the trace.dat writer into a scratch folder)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _run(folder: Path) -> list[dict]:
    nbformat = pytest.importorskip("nbformat", reason="nbformat not installed: pip install -e '.[test]'")
    nbclient = pytest.importorskip("nbclient", reason="nbclient not installed: pip install -e '.[test]'")
    pytest.importorskip("ipykernel", reason="ipykernel not installed: pip install -e '.[test]'")
    nb = nbformat.read(folder / "tour.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _check(outputs: list[dict]) -> None:
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("flagged-exits" in h for h in html), "Analysis._repr_html_ shows the flagged exits"
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2, "the figures display"


def test_tour_notebook(tmp_path):
    """On the bundled samples when they are there; else on a KVM scenario written by the trace.dat writer."""
    if (SAMPLES / "kvm-double-pmi.dat").is_file():
        _check(_run(SAMPLES))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent / "detectors"))
    import kvm_gen

    from tracekit.testing.formats_extra import kvm_formats
    from tracekit.testing.tracedat_writer import write_tracedat

    sc = kvm_gen.build(11, windows=200, vcpus=2)
    fmts = kvm_formats()
    write_tracedat(tmp_path / "kvm-double-pmi.dat", {k: v for k, v in sc.trace.frames.items() if k in fmts}, fmts,
                   kallsyms={"kvm_pmu_deliver_pmi": kvm_gen.PMI_ADDR, "kvm_pmu_handle_event": kvm_gen.HANDLE_ADDR})
    shutil.copy(SAMPLES / "tour.ipynb", tmp_path / "tour.ipynb")
    _check(_run(tmp_path))
