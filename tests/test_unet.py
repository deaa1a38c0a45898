"""Tests of the DDPM/ADM-style U-Net: errors, parameter counts, init, class labels, checkpoints of the flat U-Net,
networks per stage. What every net must do (output sizes, determinism, memory format, time, gradients, refused
sizes) and the U-Net's levels are checked in tests/contracts/test_net_contract.py."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import perturb_zero_init

from dimdiff.nets.layers import num_groups, timestep_embedding
from dimdiff.nets.unet import UNET_PRESETS, UNet, num_parameters


def small_unet(channels: int = 1, **overrides) -> UNet:
    config = dict(in_channels=channels, out_channels=channels, base_channels=16,
                  channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(1,), num_heads=2)
    return UNet(**(config | overrides))


def perturb_output_conv(net: UNet) -> None:
    with torch.no_grad():
        net.output_conv.weight.normal_(0.0, 0.05)
        net.output_conv.bias.normal_(0.0, 0.05)


@pytest.mark.parametrize("size", [(12, 16), (16, 6)])
def test_wrong_size_names_divisor_and_size(size: tuple[int, int]) -> None:
    net = small_unet(channel_mult=(1, 2, 2, 2))  # 4 levels: divisor 8
    with pytest.raises(ValueError, match=rf"divisible by 8.*{size[0]}x{size[1]}"):
        net(torch.randn(1, 1, *size), torch.rand(1))


def test_wrong_channel_count_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"x of shape \(B, 3, H, W\), got \(2, 1, 8, 8\)"):
        small_unet(3)(torch.randn(2, 1, 8, 8), torch.rand(2))


def test_wrong_t_shape_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"t of shape \(2,\)"):
        small_unet()(torch.randn(2, 1, 8, 8), torch.rand(()))


def test_attention_level_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"attention_levels in range\(0, 3\)"):
        small_unet(attention_levels=(3,))


def test_preset_parameter_counts() -> None:
    with torch.device("meta"):
        tiny = UNet(**UNET_PRESETS["tiny"])
        ddpm = UNet(**UNET_PRESETS["ddpm-cifar10"])
    assert num_parameters(tiny) == 982_681  # 1 channel (the preset's)
    assert num_parameters(ddpm) == 35_746_307  # Ho et al. 2020's CIFAR-10 net


def test_tiny_preset_runs() -> None:
    net = UNet(**UNET_PRESETS["tiny"])
    assert net(torch.randn(2, 1, 16, 16), torch.rand(2)).shape == (2, 1, 16, 16)


def test_output_is_zero_at_construction() -> None:
    torch.manual_seed(0)
    net = small_unet(3)
    y = net(torch.randn(2, 3, 16, 16), torch.rand(2))
    assert torch.count_nonzero(y) == 0


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    net = small_unet(3, num_classes=4, dropout=0.1)
    perturb_output_conv(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x, t, labels = torch.randn(4, 3, 16, 16), torch.rand(4), torch.tensor([0, 1, 2, 3])
    for _ in range(2):  # the first step moves the zero-initialised convs off zero
        optimizer.zero_grad()
        loss = (net(x, t, labels) - x).square().mean()
        loss.backward()
        optimizer.step()
    dead = [name for name, p in net.named_parameters()
            if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert dead == []


def test_class_labels_change_the_output() -> None:
    torch.manual_seed(0)
    net = small_unet(num_classes=3).eval()
    perturb_zero_init(net)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    y0 = net(x, t, torch.tensor([0, 0]))
    y1 = net(x, t, torch.tensor([1, 1]))
    assert y0.shape == y1.shape == x.shape
    assert not torch.allclose(y0, y1)


def test_class_labels_errors() -> None:
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    with pytest.raises(ValueError, match="class_labels of shape"):
        small_unet(num_classes=3)(x, t)
    with pytest.raises(ValueError, match=r"class_labels in range\(0, 3\)"):
        small_unet(num_classes=3)(x, t, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="num_classes=0"):
        small_unet()(x, t, torch.tensor([0, 1]))


@pytest.mark.parametrize("dim", [2, 7, 32, 33])
def test_timestep_embedding_is_the_closed_form(dim: int) -> None:
    """[sin(t w_i), cos(t w_i)], w_i = 10000^(-i / (k - 1)), k = dim // 2, then one zero for an odd dim."""
    t = torch.tensor([0.0, 0.37, 1.0, 500.0, 999.0])
    k = dim // 2
    w = [10000.0 ** (-i / max(k - 1, 1)) for i in range(k)]
    expected = torch.tensor([[math.sin(s * wi) for wi in w] + [math.cos(s * wi) for wi in w] + [0.0] * (dim % 2)
                             for s in t.tolist()])  # fmt: skip
    emb = timestep_embedding(t, dim)
    assert emb.shape == (5, dim) and emb.dtype == torch.float32
    torch.testing.assert_close(emb, expected.float(), atol=2e-4, rtol=0)  # float32 angles up to 999
    assert torch.equal(emb[0, :k], torch.zeros(k)) and torch.equal(emb[0, k : 2 * k], torch.ones(k))
    if dim % 2:
        assert torch.equal(emb[:, -1], torch.zeros(5))  # the padding


@pytest.mark.parametrize(("channels", "groups"), [(8, 8), (24, 24), (48, 24), (64, 32), (96, 32)])
def test_num_groups_divides_channels(channels: int, groups: int) -> None:
    assert num_groups(channels) == groups


# ----------------------------------------------------------------------------- checkpoints of the flat U-Net
# The flat U-Net (before levels) named its blocks and resamplers down.i and up.i, in the order it ran them.
# small_unet(): 3 levels, 1 ResBlock per level on the way down, 2 on the way up.
FLAT_NAMES = {
    "encoder.0.blocks.0": "down.0", "encoder.0.downsample": "down.1", "encoder.1.blocks.0": "down.2",
    "encoder.1.downsample": "down.3", "encoder.2.blocks.0": "down.4",
    "decoder.2.blocks.0": "up.0", "decoder.2.blocks.1": "up.1", "decoder.2.upsample": "up.2",
    "decoder.1.blocks.0": "up.3", "decoder.1.blocks.1": "up.4", "decoder.1.upsample": "up.5",
    "decoder.0.blocks.0": "up.6", "decoder.0.blocks.1": "up.7",
}  # fmt: skip


def flat_state(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """small_unet()'s state dict (at ``prefix``) under the flat U-Net's key names."""

    def flat(key: str) -> str:
        if not key.startswith(prefix):
            return key
        module, _, name = key[len(prefix) :].rpartition(".")
        while module and module not in FLAT_NAMES:
            module, _, head = module.rpartition(".")
            name = f"{head}.{name}"
        return f"{prefix}{FLAT_NAMES[module]}.{name}" if module else key

    return {flat(key): value for key, value in state.items()}


def test_the_flat_unets_parameter_order_is_kept():
    """Optimizer state is saved by parameter position: the levels register in the flat net's order."""
    names = list(flat_state(dict(small_unet().named_parameters())))
    sections = [n.split(".")[0] for n in names]
    assert list(dict.fromkeys(sections)) == ["time_embed", "input_conv", "down", "mid", "mid_res", "up",
                                             "output_norm", "output_conv"]  # fmt: skip
    for section in ("down", "up"):
        indices = [int(n.split(".")[1]) for n in names if n.startswith(f"{section}.")]
        assert indices == sorted(indices) and set(indices) == set(range(indices[-1] + 1))


def test_a_flat_unets_state_dict_loads_and_gives_the_same_output():
    torch.manual_seed(0)
    net = small_unet().eval()
    perturb_zero_init(net)
    old = flat_state(net.state_dict())
    assert any(k.startswith("down.") for k in old) and not any(k.startswith(("encoder", "decoder")) for k in old)
    torch.manual_seed(1)
    fresh = small_unet().eval()
    fresh.load_state_dict(old)  # strict
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    with torch.no_grad():
        assert torch.equal(fresh(x, t), net(x, t))
    ema = copy.deepcopy(small_unet()).eval()  # the trainer's EMA model is a deep copy: the hook moves with it
    ema.load_state_dict(old)
    with torch.no_grad():
        assert torch.equal(ema(x, t), net(x, t))


def test_a_flat_state_dict_loads_into_nets_nested_in_a_staged_net(tmp_path):
    from safetensors.torch import save_file

    from dimdiff.checkpoint import CheckpointError, load_state_dict_strict
    from dimdiff.nets.staged import StagedNet

    torch.manual_seed(0)
    staged = StagedNet([small_unet(), small_unet()], heights=(8, 4)).eval()
    for net in staged.nets:
        perturb_zero_init(net)
    old = flat_state(flat_state(staged.state_dict(), "nets.0."), "nets.1.")
    assert any(k.startswith("nets.1.up.7.") for k in old)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    for load in ("load_state_dict", "load_state_dict_strict"):
        fresh = StagedNet([small_unet(), small_unet()], heights=(8, 4)).eval()
        if load == "load_state_dict":
            fresh.load_state_dict(old)
        else:
            save_file(old, str(tmp_path / "model.safetensors"))
            load_state_dict_strict(fresh, tmp_path / "model.safetensors")
        with torch.no_grad():
            assert torch.equal(fresh(x, t), staged(x, t))
    old["nets.0.down.99.res.conv1.bias"] = old.pop("nets.0.down.4.res.conv1.bias")  # another architecture's key
    save_file(old, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing \(1\): nets\.0\.encoder\.2\.blocks\.0\.res\.conv1\.bias"):
        load_state_dict_strict(fresh, tmp_path / "model.safetensors")


# ----------------------------------------------------------------------------- networks per stage
def _dvdp_process(resolution: int = 16):
    from dimdiff.process.dimension_varying import DimensionVaryingProcess
    from dimdiff.process.stages import Stages

    return DimensionVaryingProcess((1, resolution, resolution), Stages((0.3, 0.6), (0.2, 0.2)))


def _staged(per_stage: bool, stage_embedding: bool | None = None):
    from dimdiff.build import build_net
    from dimdiff.config import ModelConfig
    from dimdiff.heads import RegressionHead

    told = not per_stage if stage_embedding is None else stage_embedding
    model = ModelConfig(base_channels=8, channel_mult=(1, 2), attention_resolutions=(), per_stage_nets=per_stage,
                        stage_embedding=told)  # fmt: skip
    torch.manual_seed(0)
    return build_net(model, _dvdp_process(), RegressionHead())


def test_per_stage_nets_route_each_batch_to_its_stage_only():
    net = _staged(per_stage=True)
    assert len(net.nets) == 3
    for k, (t, size) in enumerate([(0.2, 16), (0.5, 8), (0.9, 4)]):
        for p in net.parameters():
            p.grad = None
        x = torch.randn(2, 1, size, size)
        net(x, torch.full((2,), t)).sum().backward()
        touched = [any(p.grad is not None for p in sub.parameters()) for sub in net.nets]
        assert touched == [j == k for j in range(3)]
        torch.testing.assert_close(net(x, torch.full((2,), t)), net.nets[k](x, torch.full((2,), t)))
    # at a turning point the state is already at the finer resolution (and float32(0.3) > 0.3):
    # the resolution, not t, picks the net
    for tau, size, k in ((0.3, 16, 0), (0.6, 8, 1)):
        x, t = torch.randn(2, 1, size, size), torch.full((2,), tau, dtype=torch.float32)
        torch.testing.assert_close(net(x, t), net.nets[k](x, t))
    with pytest.raises(ValueError, match=r"expected a state of height in \[16, 8, 4\]"):
        net(torch.randn(2, 1, 12, 12), torch.full((2,), 0.2))


def test_a_shared_net_told_the_stage_depends_on_it():
    net = _staged(per_stage=False)
    assert len(net.nets) == 1 and net.nets[0].num_classes == 3
    with torch.no_grad():  # zero-initialised output layers: make every path count
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    x = torch.randn(2, 1, 8, 8)
    labels = torch.ones(2, dtype=torch.long)  # t = 0.5 is stage 1
    torch.testing.assert_close(net(x, torch.full((2,), 0.5)), net.nets[0](x, torch.full((2,), 0.5), labels))
    other = net.nets[0](x, torch.full((2,), 0.5), labels * 2)
    assert not torch.allclose(net(x, torch.full((2,), 0.5)), other)


@pytest.mark.parametrize("per_stage", [False, True])
def test_pixel_units_scale_the_state_down_and_the_output_up_by_2_to_the_k(per_stage):
    """A stage-k state is 2^k times average-pooled pixels: in pixel units the denoiser feeds the net
    z / 2^k and multiplies its output by 2^k; stage 0 is untouched, and without pixel units the net
    sees z as it is."""
    from dimdiff.heads import RegressionHead
    from dimdiff.nets.denoiser import Denoiser
    from dimdiff.process.parameterization import Parameterization

    net = _staged(per_stage, stage_embedding=False)
    with torch.no_grad():  # zero-initialised output layers: make every path count
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    head = RegressionHead(Parameterization.X0)
    scaled = Denoiser(net, _dvdp_process(), head, clip_x0=False, pixel_units=True)
    plain = Denoiser(net, _dvdp_process(), head, clip_x0=False, pixel_units=False)
    for k, (t, size) in enumerate([(0.2, 16), (0.5, 8), (0.9, 4)]):
        x, tt = torch.randn(2, 1, size, size), torch.full((2,), t, dtype=torch.float64)
        inner = net.nets[k if per_stage else 0]
        with torch.no_grad():
            torch.testing.assert_close(scaled(x, tt), inner(x / 2**k, tt.float()) * 2**k)
            torch.testing.assert_close(plain(x, tt), inner(x, tt.float()))
            assert (k == 0) == torch.allclose(scaled(x, tt), plain(x, tt))


def test_a_process_with_stages_gets_a_staged_net_and_the_gaussian_one_a_plain_unet():
    from dimdiff.build import build_net
    from dimdiff.config import ModelConfig
    from dimdiff.heads import RegressionHead
    from dimdiff.nets.staged import StagedNet
    from dimdiff.nets.unet import UNet
    from dimdiff.process.gaussian import GaussianProcess

    small = ModelConfig(base_channels=8, channel_mult=(1, 2), attention_resolutions=())
    staged = build_net(small, _dvdp_process(), RegressionHead())
    assert isinstance(staged, StagedNet) and staged.heights == (16, 8, 4) and not staged.skips_parameters
    assert isinstance(build_net(small, GaussianProcess((1, 16, 16)), RegressionHead()), UNet)  # one level


def test_staged_net_refuses_a_wrong_number_of_nets_or_a_stage_label_for_per_stage_nets():
    from dimdiff.nets.staged import StagedNet

    nets = [torch.nn.Identity(), torch.nn.Identity()]
    with pytest.raises(ValueError, match=r"expected 1 shared net or 3 \(one per level\), got 2"):
        StagedNet(nets, heights=(16, 8, 4))
    with pytest.raises(ValueError, match="tell_stage applies to one shared net"):
        StagedNet([*nets, torch.nn.Identity()], heights=(16, 8, 4), tell_stage=True)
    with pytest.raises(ValueError, match="one distinct state height per level"):
        StagedNet(nets, heights=(16, 16))
    assert StagedNet([*nets, torch.nn.Identity()], heights=(16, 8, 4)).skips_parameters


def test_stage_options_need_turning_points():
    from dimdiff.build import build_net
    from dimdiff.config import ConfigError, ModelConfig
    from dimdiff.heads import RegressionHead
    from dimdiff.process.gaussian import GaussianProcess

    with pytest.raises(ConfigError, match="expected a process whose state changes resolution"):
        build_net(ModelConfig(per_stage_nets=True), GaussianProcess((1, 16, 16)), RegressionHead())
