import re
import stat

import pytest

import edgesdk
from edgesdk.errors import UserInputError
from edgesdk.quantization.accuracy import Accuracy, OutputAgreement
from edgesdk.report.advice import fallback_reasons, hints
from edgesdk.report.html import compare_html, cost_html, write_html
from edgesdk.simulate.cost_model import simulate
from edgesdk.simulate.cost_report import CompareReport, CompareRow
from edgesdk.simulate.partition import partition
from tests.simulate.test_partition_and_cost_model import small_model


def phone_report(dtype: str = "float32") -> str:
    phone = edgesdk.get_device("phone")
    model = small_model(dtype)
    placed = partition(model, phone)
    return cost_html("small", phone, simulate(model, placed, phone), placed.info())


def external_references(html: str) -> list[str]:
    """Every src/href that is not inside the page (an XML namespace is not a fetch)."""
    return [ref for ref in re.findall(r'(?:src|href)="([^"]*)"', html) if not ref.startswith("#")]


def test_a_cost_report_is_one_self_contained_file_that_names_the_device():
    html = phone_report()
    assert "<h1>small on phone</h1>" in html
    assert html.count("<svg") == 2  # timeline and op classes: the synthetic model has no memory record
    assert "<script" not in html and external_references(html) == []
    # The fp32 model's top-k falls back with its reason; the precision placed its convolutions.
    assert "unsupported op class sort (topk)" in html
    assert "float32 runs on the gpu (2 kernels): the npu has no float32; try --quantize int8 or fp16" in html


def test_fallbacks_are_grouped_by_reason_and_hints_name_the_precision():
    phone = edgesdk.get_device("phone")
    info = partition(small_model("float16"), phone).info()
    assert fallback_reasons(info) == ["1 kernel: npu -> cpu, unsupported op class sort (topk)", "1 kernel: gpu -> cpu, unsupported op class sort (topk)"]
    assert hints(info, phone) == []  # fp16 runs on the NPU: nothing to advise
    assert hints(partition(small_model("float32"), phone).info(), phone)[0].startswith("float32 runs on the gpu")


def test_a_kernels_split_adds_up_to_its_latency_and_bound_names_its_largest_part():
    phone = edgesdk.get_device("phone")
    model = small_model("float16")
    for layer in simulate(model, partition(model, phone), phone).per_layer:
        parts = layer.split()
        assert sum(parts.values()) == pytest.approx(layer.latency_ms)
        assert layer.bound == max(parts, key=parts.__getitem__)


def test_a_compare_report_charts_every_device_and_precision():
    agreement = Accuracy(samples=4, outputs=[OutputAgreement(name="y", cosine=0.998, psnr_db=40.0, top1_agreement=1.0)])
    rows = [
        CompareRow(
            device=device,
            scheme=scheme,
            latency_ms=latency,
            energy_mj=0.1,
            peak_memory_bytes=1 << 20,
            weight_bytes=1 << 16,
            units={"npu": 3},
            fallbacks=0,
            speedup=1.0,
            accuracy=agreement if scheme == "int8" else None,
        )  # fmt: skip
        for device, latency in (("phone", 0.5), ("mcu", 40.0))
        for scheme in ("none", "int8")
    ]
    html = compare_html(CompareReport(model="net", rows=rows))
    assert "<h1>net: 2 devices x 2 precisions</h1>" in html and html.count("<svg") == 1
    assert ">mcu<" in html and "top-1 100.0%" in html and external_references(html) == []


def test_a_report_never_replaces_a_file_and_leaves_nothing_half_written(tmp_path):
    written = write_html(tmp_path / "report.html", "<html></html>")
    assert written.read_text() == "<html></html>"
    assert stat.S_IMODE(written.stat().st_mode) & 0o044  # readable by others, as any file the user makes
    with pytest.raises(UserInputError, match="the file exists; edgesdk does not overwrite it"):
        write_html(written, "other")
    assert written.read_text() == "<html></html>"
    with pytest.raises(UserInputError, match="no directory"):
        write_html(tmp_path / "missing" / "report.html", "x")
    assert [path.name for path in tmp_path.iterdir()] == ["report.html"]
