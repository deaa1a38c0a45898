"""The Flexi-UNet's own properties (its Net contract is in tests/contracts/test_net_contract.py): level 0 is
the plain U-Net bit for bit, adapters are shared by width and exist only where a path runs them, compute
falls with the input level, SSD's 64 px sampling grid asks only for paths it serves, and settings it cannot serve
are named."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from dimdiff.bench.timing import count_flops
from dimdiff.nets.flexi_unet import FlexiUNet
from dimdiff.nets.unet import UNet


def unet(**overrides) -> UNet:
    config = dict(in_channels=1, out_channels=1, base_channels=8, channel_mult=(1, 2, 2, 2), num_res_blocks=1,
                  attention_levels=(1,), num_heads=2)  # fmt: skip
    torch.manual_seed(0)
    return UNet(**(config | overrides))


def test_level_zero_is_the_plain_unet_bit_for_bit():
    net = FlexiUNet(unet(), full_size=(32, 32), levels=4).eval()
    x, t = torch.randn(2, 1, 32, 32), torch.rand(2)
    with torch.no_grad():
        assert torch.equal(net(x, t, out_size=(32, 32)), net.unet(x, t))


def test_adapters_are_shared_by_width_and_only_where_a_path_needs_them():
    net = FlexiUNet(unet(), full_size=(32, 32), levels=4)
    assert sorted(net.adapt_in) == ["16"]  # levels 2 and 3 enter at width 16; level 1 at the stem's 8
    assert sorted(net.adapt_out) == ["16"]  # levels 1..3 leave at width 16, mapped to level 0's 8
    assert len(FlexiUNet(unet(), full_size=(32, 32), levels=1).adapt_in) == 0  # one level: the plain U-Net


def test_compute_falls_with_the_input_level():
    net = FlexiUNet(unet(), full_size=(32, 32), levels=4).eval()
    t = torch.rand(1)
    with torch.no_grad():
        keep = [count_flops(lambda s=s: net(torch.randn(1, 1, s, s), t)) for s in (32, 16, 8, 4)]
        up = [count_flops(lambda s=s: net(torch.randn(1, 1, s, s), t, out_size=(2 * s, 2 * s))) for s in (16, 8, 4)]
    assert keep == sorted(keep, reverse=True) and len(set(keep)) == 4
    assert up == sorted(up, reverse=True) and all(u > k for u, k in zip(up, keep[1:], strict=True))


def test_ssd_sampling_at_64px_runs_each_level_and_three_increasing_paths_all_served():
    """The 1000-step grid of SSD's 64 px, 4-level schedule (benchmarks/flexi_flops.py counts its cost): one net call
    per step, each (input, target) size a path of the Flexi-UNet, the increasing path only at the first step of
    each coarser level."""
    from dimdiff.process.scale_space import ScaleSpaceProcess

    process, net = ScaleSpaceProcess((1, 64, 64), levels=4), FlexiUNet(unet(), full_size=(64, 64), levels=4)
    paths, increasing = Counter(), []
    for t in process.timesteps(1000).tolist()[:-1]:  # the grid ends at t = 0, where the net is not called
        size_in, size_out = process.shape_at(t)[1:], process.target_shape_at(t)[1:]
        assert size_out in net.out_sizes(size_in)
        paths[size_in[0], size_out[0]] += 1
        if size_in != size_out:
            increasing.append(round(t * 1000) - 1)  # the step n of t = (n + 1) / T
    assert paths == {(64, 64): 438, (32, 32): 311, (16, 16): 186, (8, 8): 62, (32, 64): 1, (16, 32): 1, (8, 16): 1}
    assert sorted(increasing) == [438, 750, 937]


def test_settings_it_cannot_serve_are_named():
    with pytest.raises(ValueError, match="expected 1 to 4 levels"):
        FlexiUNet(unet(), full_size=(32, 32), levels=5)
    with pytest.raises(ValueError, match="divisible by the U-Net's 8, got 20x20"):
        FlexiUNet(unet(), full_size=(20, 20), levels=2)


def test_model_layout_flexi_serves_dvdp_with_one_unet_entered_at_each_stage():
    from dimdiff.build import build_denoiser, build_head, build_net, build_process
    from dimdiff.config import ConfigError, NetLayout, config_from_dict

    config = config_from_dict({
        "model": {"base_channels": 8, "channel_mult": [1, 2, 2], "attention_resolutions": [], "layout": "flexi"},
        "process": {"kind": "dvdp", "parameterization": "v", "turning_points": [0.3, 0.6],
                    "window_widths": [0.2, 0.2]},
        "data": {"resolution": 16},
    })  # fmt: skip
    process = build_process(config.process, (1, 16, 16))
    net = build_net(config.model, process, build_head(config))
    assert isinstance(net, FlexiUNet) and net.levels == 3
    denoiser = build_denoiser(config, net, process)
    for t, size in ((0.1, 16), (0.5, 8), (0.9, 4)):
        assert denoiser(torch.randn(2, 1, size, size), torch.full((2,), t)).shape == (2, 1, size, size)
    with pytest.raises(ConfigError, match="model.layout: expected auto for this process"):
        config_from_dict({"model": {"layout": "flexi"}})
    with pytest.raises(ConfigError, match="model.layout: expected auto with model.stage_embedding"):
        config_from_dict({"model": {"layout": "upsampled", "per_stage_nets": True},
                          "process": {"kind": "dvdp", "turning_points": [0.5], "window_widths": [0.2]}})  # fmt: skip
    old = {"model": {"flexi": True}, "process": {"kind": "ssd", "parameterization": "x0"}}  # a config.json of 0.x
    assert config_from_dict(old).model.layout is NetLayout.FLEXI
    assert config_from_dict({"model": {"flexi": False}}).model.layout is NetLayout.AUTO
    both = {"model": {"flexi": True, "layout": "upsampled"}, "process": old["process"]}  # the new key says it
    assert config_from_dict(both).model.layout is NetLayout.UPSAMPLED
    with pytest.raises(ConfigError, match="model.flexi"):
        config_from_dict({"model": {"flexi": "no"}})
    ssd = config_from_dict({"model": {"per_stage_nets": True}, "data": {"resolution": 16},
                            "process": {"kind": "ssd", "parameterization": "x0", "levels": 2}})  # fmt: skip
    with pytest.raises(ConfigError, match="model.per_stage_nets: expected false with a Flexi-UNet"):
        build_net(ssd.model, build_process(ssd.process, (1, 16, 16)), build_head(ssd))


def test_model_layout_upsampled_runs_ssd_on_the_plain_unet_at_full_resolution():
    """SSD's comparison without a Flexi-UNet: each state upsampled to 16 px, the whole U-Net, the output resized
    to the target; level 0 in and out is the plain U-Net bit for bit, and every call costs a full forward."""
    from dimdiff.build import build_denoiser, build_head, build_net, build_process
    from dimdiff.config import config_from_dict
    from dimdiff.nets.upsampled import UpsampledNet

    config = config_from_dict({
        "model": {"base_channels": 8, "channel_mult": [1, 2], "attention_resolutions": [], "layout": "upsampled"},
        "process": {"kind": "ssd", "parameterization": "x0", "levels": 3},
        "data": {"resolution": 16},
    })  # fmt: skip
    process = build_process(config.process, (1, 16, 16))
    net = build_net(config.model, process, build_head(config)).eval()
    assert isinstance(net, UpsampledNet) and net.levels == 3
    denoiser = build_denoiser(config, net, process)
    for t in (0.1, process.change_times[0], 0.8, process.change_times[1], 0.99):
        shape = process.target_shape_at(t)
        x = torch.randn(2, *process.shape_at(t))
        assert denoiser(x, torch.full((2,), t)).shape == (2, *shape)
    x, t = torch.randn(2, 1, 16, 16), torch.rand(2)
    with torch.no_grad():
        assert torch.equal(net(x, t), net.unet(x, t))
        costs = {s: count_flops(lambda s=s: net(torch.randn(1, 1, s, s), t[:1])) for s in (16, 8, 4)}
    assert len(set(costs.values())) == 1  # the whole U-Net at 16 px whatever the state (no saving)
