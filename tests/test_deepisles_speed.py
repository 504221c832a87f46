"""DeepISLES' faster CPU path: each TorchScript checkpoint rebuilt as its eager MONAI network
(:mod:`stroke_seg.models.segresnet`) and run by OpenVINO in float32, against the checkpoint itself and against the
``stroke_segmentor`` package's own mask. Stand-ins: small scripted MONAI SegResNet(DS) networks the tests write."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stroke_seg
from conftest import require_module
from stroke_seg.types import SegmentConfig

require_module("stroke_segmentor")
require_module("monai")

from deepisles_standins import RuleNet, package_mask, segresnet_standin, write_segresnet_standins  # noqa: E402
from monai.networks.nets import SegResNet, SegResNetDS  # noqa: E402
from test_deepisles import stripped_case  # noqa: E402

from stroke_seg.models import deepisles, segresnet  # noqa: E402

NETWORKS = {
    "segresnetds-instance": lambda: SegResNetDS(init_filters=4, blocks_down=(1, 2, 2), norm="instance", in_channels=2),
    "segresnetds-dsdepth2-leaky": lambda: SegResNetDS(
        init_filters=4,
        blocks_down=(1, 1, 2),
        norm=("instance", {"affine": False}),
        act=("leakyrelu", {}),
        in_channels=2,
        out_channels=3,
        dsdepth=2,
    ),
    "segresnetds-batch-nontrainable": lambda: SegResNetDS(
        init_filters=4, blocks_down=(1, 1), norm="batch", in_channels=2, upsample_mode="nontrainable"
    ),
    "segresnet-group": lambda: SegResNet(
        init_filters=4, blocks_down=(1, 2, 2, 4), in_channels=2, out_channels=2, norm=("group", {"num_groups": 2})
    ),
}


def _scripted(net: torch.nn.Module, tmp_path) -> torch.jit.ScriptModule:
    """``net`` with random weights (and running statistics), saved as TorchScript and loaded back, as a checkpoint
    file is."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
        for name, b in net.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 2.0)
            elif "running_mean" in name:
                b.normal_(0.0, 0.5)
    torch.jit.save(torch.jit.script(net.eval()), str(tmp_path / "model.ts"))
    return torch.jit.load(str(tmp_path / "model.ts")).eval()


@pytest.mark.parametrize("kind", list(NETWORKS))
def test_eager_rebuild_equals_the_torchscript_output(kind, tmp_path):
    scripted = _scripted(NETWORKS[kind](), tmp_path)
    eager = segresnet.rebuild(scripted, name=kind)
    assert eager is not None and not isinstance(eager, torch.jit.ScriptModule)
    assert type(eager).__name__ == scripted.original_name
    x = torch.randn(1, 2, 32, 48, 16, generator=torch.Generator().manual_seed(1))  # another window than the check's
    with torch.inference_mode():
        assert torch.equal(eager(x), scripted(x))


def test_a_rebuild_that_differs_or_cannot_be_read_is_refused(tmp_path, monkeypatch):
    scripted = _scripted(NETWORKS["segresnetds-instance"](), tmp_path)
    real = segresnet._norm
    monkeypatch.setattr(segresnet, "_norm", lambda mods: (real(mods)[0], real(mods)[1] | {"eps": 1e-1}))
    assert segresnet.rebuild(scripted) is None  # same tensors, another setting: the check on a window catches it
    monkeypatch.undo()
    assert segresnet.rebuild(torch.jit.script(RuleNet(-1.5, 2.0, -3.0))) is None  # not a SegResNet
    assert segresnet.rebuild(scripted) is not None


@pytest.fixture(scope="module")
def segresnet_weights(tmp_path_factory):
    """15 checkpoints: two small SegResNetDS stand-ins with different weights, alternating (each file converted once
    to OpenVINO per machine; only two conversions here)."""
    folder = tmp_path_factory.mktemp("deepisles-segresnet")
    write_segresnet_standins(folder, n=2, init_filters=2, blocks_down=(1, 1))
    for i in range(2, 15):
        (folder / f"model{i}.ts").write_bytes((folder / f"model{i % 2}.ts").read_bytes())
    return folder


@pytest.mark.slow  # two OpenVINO conversions and the package's 15 checkpoints: about a minute on an idle machine
def test_openvino_path_mask_equals_the_packages(tmp_path, segresnet_weights, monkeypatch):
    """The default engine on a CPU (OpenVINO float32 on the eager rebuild) gives the package's own mask."""
    require_module("openvino")
    monkeypatch.setenv(deepisles.WEIGHTS_ENV, str(segresnet_weights))
    monkeypatch.setenv("STROKE_SEG_ENGINE_CACHE", str(tmp_path / "engines"))
    files = stripped_case(tmp_path / "case", "lps-anisotropic-float32")
    reference = package_mask(monkeypatch, segresnet_weights, files["adc"], files["dwi"], tmp_path / "pkg.nii.gz")
    result = stroke_seg.segment(files, model=deepisles.NAME, config=SegmentConfig(engine="auto"))
    assert result.model_details["engine"] == "openvino"
    assert result.model_details["windows_per_checkpoint"] == 1
    mask = np.asarray(result.mask.dataobj)
    assert 100 < reference.sum() < 0.1 * reference.size  # a lesion, not noise: the comparison compares something
    assert int((mask != reference).sum()) == 0


def test_segresnet_standin_finds_the_lesion():
    """The stand-in's rule passes through the network: a bright-DWI, dark-ADC block is a lesion, the rest is not."""
    net = segresnet_standin(init_filters=2, blocks_down=(1, 1))
    x = torch.randn(1, 2, 32, 32, 32, generator=torch.Generator().manual_seed(2)) * 0.3
    x[:, 1, 8:16, 8:16, 8:16], x[:, 0, 8:16, 8:16, 8:16] = 3.0, -2.0
    with torch.inference_mode():
        lesion = net(x).argmax(1)[0].bool()
    inside = torch.zeros_like(lesion)
    inside[8:16, 8:16, 8:16] = True
    assert lesion[inside].float().mean() > 0.95 and lesion[~inside].float().mean() < 0.01
