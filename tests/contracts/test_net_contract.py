"""The contract every network in dimdiff must pass, checked through the `Net` protocol
(``net(x, t, *, out_size)``, ``net.out_sizes(in_size)``) alone.

Every test is parametrised over ``NET_CASES`` and, within a case, over every (input size, output
size) pair: the input sizes the case declares, each with every output size ``out_sizes`` lists for
it. A new network (or arrangement of networks) gets the whole suite by adding one line to that list.
A case also names input sizes the net must refuse and, where a batch runs only part of the net (one
net per level), the module whose parameters a given input runs.

The U-Net's levels (enter at level l_in, leave at level l_out) are checked at the end of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch
from conftest import perturb_zero_init
from torch import nn

from dimdiff.nets.base import Net, Size
from dimdiff.nets.flexi_unet import FlexiUNet
from dimdiff.nets.staged import StagedNet
from dimdiff.nets.unet import UNet
from dimdiff.nets.upsampled import UpsampledNet

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread (conftest)


def unet(in_channels: int = 1, out_channels: int | None = None, **overrides) -> UNet:
    config = dict(in_channels=in_channels, out_channels=out_channels or in_channels, base_channels=8,
                  channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(1,), num_heads=2)  # fmt: skip
    return UNet(**(config | overrides))


def staged_unet(**overrides) -> UNet:
    return unet(channel_mult=(1, 2), **overrides)  # divisor 2: runs at heights 16, 8 and 4


def whole(net: nn.Module, in_size: Size, out_size: Size) -> nn.Module:
    return net


def level_net(net: StagedNet, in_size: Size, out_size: Size) -> nn.Module:
    return net.net_at(net.heights.index(in_size[0]))


def flexi_path(net: FlexiUNet, in_size: Size, out_size: Size) -> nn.Module:
    """The modules a Flexi-UNet path from in_size's level to out_size's runs."""
    unet, l_in, l_out = net.unet, net.level_of(in_size), net.level_of(out_size)
    if l_in == 0:
        return unet
    used = [unet.time_embed, unet.input_conv, *unet.encoder[l_in:], unet.mid, unet.mid_res,
            *[unet.decoder[str(k)] for k in range(l_out + 1, unet.levels)], unet.decoder[str(l_out)].blocks,
            unet.output_norm, unet.output_conv]  # fmt: skip  (level l_out's upsample is not run)
    if str(unet.entry_channels(l_in)) in net.adapt_in:
        used.append(net.adapt_in[str(unet.entry_channels(l_in))])
    if str(unet.exit_channels(l_out)) in net.adapt_out:
        used.append(net.adapt_out[str(unet.exit_channels(l_out))])
    return nn.ModuleList(used)


def flexi(**overrides) -> FlexiUNet:
    return FlexiUNet(unet(channel_mult=(1, 2, 3), **overrides), full_size=(16, 16), levels=3)


class NetCase(NamedTuple):
    id: str
    make: Callable[[], nn.Module]
    in_channels: int
    out_channels: int
    in_sizes: tuple[Size, ...]  # input sizes to check, each with every output size out_sizes lists
    bad_in_sizes: tuple[Size, ...]  # input sizes the net refuses
    runs: Callable[[nn.Module, Size, Size], nn.Module] = whole  # the module whose parameters a path runs


HEIGHTS = (16, 8, 4)
NET_CASES: list[NetCase] = [
    NetCase("unet", lambda: unet(), 1, 1, ((8, 8), (16, 16), (16, 32)), ((6, 8), (8, 10))),
    NetCase("unet-3-to-6", lambda: unet(3, 6, dropout=0.5), 3, 6, ((8, 8), (16, 8)), ((12, 6),)),
    NetCase("staged-told-level", lambda: StagedNet([staged_unet(num_classes=3)], heights=HEIGHTS, tell_stage=True),
            1, 1, ((16, 16), (8, 8), (4, 4)), ((12, 12), (16, 15))),  # fmt: skip
    NetCase("staged-shared", lambda: StagedNet([staged_unet()], heights=HEIGHTS), 1, 1, ((16, 16), (4, 4)),
            ((2, 2),)),  # fmt: skip
    NetCase("staged-per-level", lambda: StagedNet([staged_unet() for _ in HEIGHTS], heights=HEIGHTS), 1, 1,
            ((16, 16), (8, 8), (4, 4)), ((32, 32),), runs=level_net),  # fmt: skip
    NetCase("flexi-3-levels", flexi, 1, 1, ((16, 16), (8, 8), (4, 4)), ((32, 32), (2, 2), (8, 4)), runs=flexi_path),
    NetCase("upsampled-3-levels", lambda: UpsampledNet(unet(), full_size=(16, 16), levels=3), 1, 1,
            ((16, 16), (8, 8), (4, 4)), ((32, 32), (2, 2), (8, 4))),  # fmt: skip
]


class Pair(NamedTuple):
    case: NetCase
    in_size: Size
    out_size: Size


def _pairs() -> list[Pair]:
    pairs = []
    for case in NET_CASES:
        net = case.make()
        for in_size in case.in_sizes:
            out_sizes = net.out_sizes(in_size)
            assert out_sizes, f"{case.id}: a declared input size {in_size} that the net does not take"
            pairs += [Pair(case, in_size, out_size) for out_size in out_sizes]
    return pairs


PAIRS = _pairs()
CASES = pytest.mark.parametrize("case", NET_CASES, ids=[c.id for c in NET_CASES])
SIZE_PAIRS = pytest.mark.parametrize("pair", PAIRS, ids=[f"{p.case.id}-{p.in_size}-to-{p.out_size}" for p in PAIRS])


def made(case: NetCase, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return perturb_zero_init(case.make()).eval()


def inputs(case: NetCase, size: Size, batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, case.in_channels, *size, generator=g), torch.rand(batch, generator=g)


# ----------------------------------------------------------------------------- outputs
@CASES
def test_the_net_follows_the_protocol(case):
    assert isinstance(case.make(), Net)


def run(pair: Pair) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pair's net (made), a batch (x, t) at its input size, and the net's output at its output size."""
    net = made(pair.case)
    x, t = inputs(pair.case, pair.in_size)
    with torch.no_grad():
        return net, x, t, net(x, t, out_size=pair.out_size)


@SIZE_PAIRS
def test_the_output_has_the_size_asked_for_and_is_finite(pair):
    net, x, t, y = run(pair)
    assert y.shape == (3, pair.case.out_channels, *pair.out_size) and torch.isfinite(y).all()
    assert y.is_contiguous()
    if net.out_sizes(pair.in_size) == (pair.out_size,):  # one output size: it is the default
        with torch.no_grad():
            assert torch.equal(net(x, t), y)


@SIZE_PAIRS
def test_eval_mode_is_deterministic_and_batch_independent(pair):
    net, x, t, y = run(pair)
    with torch.no_grad():
        assert torch.equal(net(x, t, out_size=pair.out_size), y)
        for i in range(len(x)):  # example i's output does not depend on the other examples
            torch.testing.assert_close(net(x[i : i + 1], t[i : i + 1], out_size=pair.out_size), y[i : i + 1],
                                       rtol=1e-4, atol=1e-5)  # fmt: skip


@SIZE_PAIRS
def test_the_input_memory_format_does_not_matter(pair):
    net, x, t, y = run(pair)
    with torch.no_grad():
        y_nhwc = net(x.contiguous(memory_format=torch.channels_last), t, out_size=pair.out_size)
    torch.testing.assert_close(y_nhwc, y)


@SIZE_PAIRS
def test_the_output_depends_on_time(pair):
    net, x, _, _ = run(pair)
    with torch.no_grad():
        y = net(x[:1].expand(2, -1, -1, -1), torch.tensor([0.1, 0.9]), out_size=pair.out_size)
    assert not torch.allclose(y[0], y[1])


@SIZE_PAIRS
def test_a_backward_pass_reaches_every_parameter_the_input_runs_and_no_other(pair):
    case, in_size, out_size = pair
    net = made(case).train()
    x, t = inputs(case, in_size)
    net(x, t, out_size=out_size).square().mean().backward()
    runs = {id(p) for p in case.runs(net, in_size, out_size).parameters()}
    dead = [name for name, p in net.named_parameters()
            if id(p) in runs and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    stray = [name for name, p in net.named_parameters() if id(p) not in runs and p.grad is not None]
    assert dead == [] and stray == []


# ----------------------------------------------------------------------------- refused sizes
@SIZE_PAIRS
def test_an_output_size_the_net_does_not_list_is_an_error_naming_both(pair):
    case, in_size, _ = pair
    net = made(case)
    bad = (2 * in_size[0], 2 * in_size[1])
    while bad in net.out_sizes(in_size):
        bad = (bad[0] + 1, bad[1])
    x, t = inputs(case, in_size)
    with pytest.raises(ValueError, match="expected") as error:
        net(x, t, out_size=bad)
    assert str(bad) in str(error.value) and str(in_size) in str(error.value)


@CASES
def test_an_input_size_the_net_does_not_take_is_an_error_naming_it(case):
    net = made(case)
    for size in case.bad_in_sizes:
        assert net.out_sizes(size) == ()
        x, t = inputs(case, size)
        with pytest.raises(ValueError, match=rf"expected .*got .*\b{size[0]}\D+{size[1]}\b"):
            net(x, t)


# ----------------------------------------------------------------------------- the U-Net's levels
def levels_unet() -> UNet:
    """3 levels of distinct widths (8, 16, 24), 2 ResBlocks per level: 3 skips per level."""
    torch.manual_seed(0)
    return perturb_zero_init(unet(2, 3, channel_mult=(1, 2, 3), num_res_blocks=2)).eval()


LEVEL_PAIRS = [(enter, leave) for enter in range(3) for leave in range(enter + 1)]


@pytest.mark.parametrize(("enter", "leave"), LEVEL_PAIRS, ids=[f"enter{e}-leave{lv}" for e, lv in LEVEL_PAIRS])
def test_the_unet_entered_at_one_level_and_left_at_another(enter, leave):
    """A Flexi-UNet's use: a coarse input enters at level l_in (through an adapter from the stem's width)
    and the output leaves at level l_out <= l_in (through an adapter to the head's width), 2^(l_in - l_out)
    times larger. Decoder levels below l_in have no skips: they run on zeros."""
    net = levels_unet()
    torch.manual_seed(2)
    adapt_in = nn.Conv2d(net.entry_channels(0), net.entry_channels(enter), 1)
    adapt_out = nn.Conv2d(net.exit_channels(leave), net.exit_channels(0), 1)
    x, t = torch.randn(2, 2, 8, 8), torch.rand(2)

    def side(level: int) -> int:  # the resolution of a level, for an 8 x 8 input at level `enter`
        return 8 * 2**enter // 2**level

    with torch.no_grad():
        emb = net.embed(t)
        h, skips = net.encode(adapt_in(net.stem(x)), emb, level=enter)
        assert sorted(skips) == list(range(enter, 3))
        for lvl, level_skips in skips.items():
            expected = [(2, c, side(lvl), side(lvl)) for c in net.encoder[lvl].skip_channels]
            assert [s.shape for s in level_skips] == expected
        h = net.middle(h, emb)

        def copied(more: dict) -> dict:  # decode consumes the skips it uses
            return {lvl: list(level_skips) for lvl, level_skips in (skips | more).items()}

        out = net.decode(h, copied({}), emb, level=leave)
        assert out.shape == (2, net.exit_channels(leave), side(leave), side(leave))
        assert net.head(adapt_out(out)).shape == (2, 3, side(leave), side(leave))
        nhwc = torch.channels_last  # the encoder's skips' memory format (another one changes the last bits)
        zeros = {lvl: [torch.zeros(2, c, side(lvl), side(lvl)).contiguous(memory_format=nhwc)
                       for c in net.encoder[lvl].skip_channels] for lvl in range(leave, enter)}  # fmt: skip
        assert torch.equal(net.decode(h, copied(zeros), emb, level=leave), out)
        if leave < enter:  # the missing levels' skips are used, where given
            ones = {lvl: [torch.ones_like(s) for s in level_skips] for lvl, level_skips in zeros.items()}
            assert not torch.allclose(net.decode(h, copied(ones), emb, level=leave), out)


def test_the_unet_entered_and_left_at_level_0_is_its_forward():
    net = levels_unet()
    x, t = torch.randn(2, 2, 16, 16), torch.rand(2)
    with torch.no_grad():
        emb = net.embed(t)
        h, skips = net.encode(net.stem(x), emb)
        out = net.head(net.decode(net.middle(h, emb), skips, emb))
        assert skips == {}  # consumed: each skip freed once used
        assert torch.equal(out, net(x, t))


def test_the_unet_refuses_a_level_it_does_not_have_or_an_entry_of_the_wrong_width():
    net = levels_unet()
    emb = net.embed(torch.rand(1))
    with pytest.raises(ValueError, match=r"expected a level in range\(0, 3\), got 3"):
        net.decode(torch.zeros(1, 24, 2, 2), {}, emb, level=3)
    with pytest.raises(ValueError, match=r"expected h of 16 channels to enter at level 2, got \(1, 8, 2, 2\)"):
        net.encode(torch.zeros(1, 8, 2, 2), emb, level=2)
