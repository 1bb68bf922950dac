"""The HTML reports end to end: every deploy writes one, `profile --html` and `compare --html` too,
and headless Chromium opens them: a screenshot that is not blank, the device named, the charts
in the page, and nothing on the browser's console."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from tests.e2e.conftest import save

pytestmark = pytest.mark.slow


def browse(page: Path, scratch: Path) -> tuple[np.ndarray, str, list[str]]:
    """Open ``page`` in headless Chromium: (screenshot RGB array, the DOM it built, console lines)."""
    shot = scratch / "shot.png"
    common = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={scratch / 'profile'}", "--window-size=1200,2200"]
    drawn = subprocess.run(
        [*common, "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    )
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    console = [line for line in drawn.stderr.splitlines() if ":CONSOLE" in line]
    return image.imread(shot)[..., :3], dom, console


def drawn_colours(pixels: np.ndarray) -> int:
    """How many distinct saturated colours the page shows (charts; text and rules are grey)."""
    saturated = pixels[(pixels.max(axis=-1) - pixels.min(axis=-1)) > 0.25]
    return len({tuple(colour) for colour in np.round(saturated * 16).astype(int)})


@pytest.mark.browser
def test_chromium_reports_console_errors_of_a_broken_page(tmp_path):
    """The check below can fail: a page with a script error shows on the console."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>null.boom()</script></body></html>")
    _, dom, console = browse(page, tmp_path)
    assert "<p>x</p>" in dom and any("Uncaught TypeError" in line for line in console)


@pytest.mark.browser
def test_the_deploy_report_opens_in_chromium_with_its_charts(run_cli, tmp_path):
    from edgesdk.testing.models import tiny_cnn

    model = save(tiny_cnn(), tmp_path / "cnn.onnx")
    code, _, err = run_cli("deploy", str(model), "--device", "phone", "--quantize", "fp16", "--input-shape", "image=1,3,32,32", "-o", str(tmp_path / "a"))
    assert code == 0, err
    report = tmp_path / "a" / "report.html"
    html = report.read_text()
    assert report.stat().st_size <= 1_000_000
    assert "<script" not in html and not re.search(r'(?:src|href)="(?!#)', html)  # nothing fetched
    pixels, dom, console = browse(report, tmp_path)
    assert console == []
    assert "<h1>cnn on phone</h1>" in dom and dom.count("<svg") == 3  # timeline, op classes, memory
    assert (pixels < 0.95).any(axis=-1).mean() > 0.03  # not blank
    assert drawn_colours(pixels) >= 4  # the charts' colours drew
    assert "verification vs onnxruntime" in dom and "Quantization: fp16" in dom


def test_profile_and_compare_write_reports_and_never_over_a_file(run_cli, tmp_path):
    from edgesdk.testing.models import tiny_cnn

    model = save(tiny_cnn(), tmp_path / "cnn.onnx")
    shape = ["--input-shape", "image=1,3,32,32"]
    code, out, err = run_cli("profile", str(model), "--device", "mcu", *shape, "--html", str(tmp_path / "p.html"))
    assert code == 0, err
    assert f"report: {tmp_path / 'p.html'}" in out and "<h1>cnn on mcu</h1>" in (tmp_path / "p.html").read_text()
    code, out, err = run_cli("compare", str(model), "--devices", "phone,mcu", "--quantize", "none,fp16", *shape, "--html", str(tmp_path / "c.html"))
    assert code == 0, err
    assert "<h1>cnn: 2 devices x 2 precisions</h1>" in (tmp_path / "c.html").read_text()
    before = (tmp_path / "c.html").read_bytes()
    code, out, err = run_cli("compare", str(model), "--devices", "phone", *shape, "--html", str(tmp_path / "c.html"))
    assert code == 2 and err.startswith(f"error: {tmp_path / 'c.html'}: the file exists; edgesdk does not overwrite it")
    assert (tmp_path / "c.html").read_bytes() == before
