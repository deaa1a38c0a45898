"""Build the objects a configuration names: codec, process, network, denoiser, sampler call.

The one place where configuration choices become objects: a process or codec kind's options build it
(rows of `process.kinds.PROCESSES` and `codecs.CODECS`), a sampler is a row of `SAMPLERS`; every table is
keyed by an enum, no class is ever looked up by a string.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from dimdiff.checkpoint_files import CheckpointError
from dimdiff.codecs import Codec, PixelCodec, QuantizedCodec
from dimdiff.config import (
    CodecConfig,
    Config,
    ConfigError,
    ModelConfig,
    NetLayout,
    ProcessConfig,
    SampleConfig,
    SamplerKind,
)
from dimdiff.data import DatasetName
from dimdiff.heads import CategoricalHead, Head, HeadKind, RegressionHead
from dimdiff.nets.denoiser import Denoiser
from dimdiff.nets.flexi_unet import FlexiUNet
from dimdiff.nets.staged import StagedNet
from dimdiff.nets.unet import UNet
from dimdiff.nets.upsampled import UpsampledNet
from dimdiff.process.base import DiffusionProcess
from dimdiff.process.schedules import make_schedule
from dimdiff.samplers import adaptive_sample, ddim_sample, ddpm_sample
from dimdiff.samplers.corrector import ComplementLangevin, CorrectedProcess
from dimdiff.samplers.ddim import Callback

__all__ = [
    "HEADS", "SAMPLERS", "build_codec", "build_process", "build_head", "build_net", "build_denoiser", "run_sampler",
    "sample_images", "check_net_shapes", "data_channels", "data_shape", "fit_process", "fit_to_data", "needs_data",
]  # fmt: skip

FIT_IMAGES = 5000  # training images (evenly spaced) that process options estimate their statistics from


def data_channels(config: Config) -> int:
    """Image channels of the configured data: data.channels, else the dataset's own (digits: 1, others: 3)."""
    return config.data.channels or (1 if config.data.name is DatasetName.DIGITS else 3)


def data_shape(config: Config, channels: int) -> tuple[int, int, int]:
    """(C, H, W) of the configured images (the process runs on ``codec.latent_shape`` of it)."""
    return (channels, config.data.resolution, config.data.resolution)


def build_codec(config: CodecConfig, state: dict[str, Tensor] | None = None, source: str = "codec state") -> Codec:
    """The configured codec, with a saved state (a checkpoint's codec.safetensors, named ``source`` in errors)
    restored if given; a state that does not fit the configured codec is a CheckpointError."""
    codec = config.options.build()
    if state is None:
        return codec
    try:
        return codec.load_state(state)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e


def build_process(config: ProcessConfig, shape: tuple[int, int, int]) -> DiffusionProcess:
    """The configured process for clean data (latents) of ``shape``, built by the kind's options."""
    return config.options.build(shape, make_schedule(config.schedule), config.num_steps)


def attention_levels(config: ModelConfig, resolution: int) -> tuple[int, ...]:
    """Pixel sizes of attention (at the data resolution) -> U-Net level indices."""
    sizes = {resolution // 2**level: level for level in range(len(config.channel_mult))}
    bad = [r for r in config.attention_resolutions if r not in sizes]
    if bad:
        raise ConfigError(
            f"model.attention_resolutions: expected sizes among {sorted(sizes)} for "
            f"{resolution} px data and {len(config.channel_mult)} levels, got {bad}"
        )
    levels = tuple(sorted(sizes[r] for r in config.attention_resolutions))
    widths = sorted({config.base_channels * config.channel_mult[level] for level in (*levels, -1)})  # -1: middle
    if any(width % config.num_heads for width in widths):
        raise ConfigError(f"model.num_heads: expected a divisor of the widths {widths} of the levels with attention "
                          f"(the middle always has it; width = base_channels x channel_mult), "
                          f"got {config.num_heads}")  # fmt: skip
    return levels


def needs_data(config: Config) -> bool:
    """Whether building the configured model needs the training images (a codec or process fitted to them)."""
    return build_codec(config.codec).needs_fit or config.process.options.needs_fit


def fit_to_data(config: Config, images: Sequence[Tensor],
                progress: Callable[[str], None] | None = None) -> tuple[Config, Codec]:  # fmt: skip
    """The codec fitted to ``images`` where it learns (telling ``progress`` how it goes), and ``config`` with
    what the process options estimate from their latents (subspace: process.complement_std)."""
    codec = build_codec(config.codec)
    codec = codec.fit(images, progress=progress) if codec.needs_fit else codec
    return fit_process(config, images, codec), codec


def fit_process(config: Config, images: Sequence[Tensor], codec: Codec | None = None) -> Config:
    """``config`` with what the process options still estimate from the training data filled in (else
    unchanged), from at most FIT_IMAGES evenly spaced ``images``, encoded by ``codec``: the process runs
    on latents."""
    options = config.process.options
    if not options.needs_fit:
        return config
    step = max(1, len(images) // FIT_IMAGES)
    encode = codec.encode if codec is not None else PixelCodec().encode
    latents = encode(torch.stack([images[i] for i in range(0, len(images), step)][:FIT_IMAGES]))
    return dataclasses.replace(config, process=dataclasses.replace(config.process, options=options.fit(latents)))


def _unet(config: ModelConfig, in_channels: int, out_channels: int, resolution: int, num_classes: int = 0) -> UNet:
    return UNet(
        in_channels=in_channels,
        out_channels=out_channels,
        base_channels=config.base_channels,
        channel_mult=tuple(config.channel_mult),
        num_res_blocks=config.num_res_blocks,
        attention_levels=attention_levels(config, resolution),
        num_heads=config.num_heads,
        dropout=config.dropout,
        scale_shift=config.scale_shift,
        num_classes=num_classes,
    )


def _regression_head(config: Config, codec: Codec) -> Head:
    tc = config.train
    return RegressionHead(config.process.parameterization, tc.loss_weighting, tc.min_snr_gamma, tc.complexity_lambda)


def _categorical_head(config: Config, codec: Codec) -> Head:
    tc = config.train
    if not isinstance(codec, QuantizedCodec):
        raise ConfigError(f"model.head = categorical: expected a quantized codec, got {type(codec).__name__}")
    head = CategoricalHead(codec, tc.label_smoothing, tc.image_loss_weight, tc.gumbel_temperature)
    return head.with_sampling(config.sample)


# model.head -> the head's builder, given the config and the codec (fitted where the head decodes with it)
HEADS: dict[HeadKind, Callable[[Config, Codec], Head]] = {
    HeadKind.REGRESSION: _regression_head,
    HeadKind.CATEGORICAL: _categorical_head,
}


def build_head(config: Config, codec: Codec | None = None) -> Head:
    """The denoiser's head (model.head), built with ``codec`` (default: the configured codec, not fitted: enough
    for the network's output shape, not for a categorical head's image-space loss)."""
    return HEADS[config.model.head](config, codec if codec is not None else build_codec(config.codec))


def build_net(config: ModelConfig, process: DiffusionProcess, head: Head) -> nn.Module:
    """The configured U-Net for every (state, target) shape ``process.net_shapes()`` lists (model.layout): an
    `UpsampledNet` (upsampled); a `FlexiUNet` (flexi, and auto where a target lies at another size than its
    state, as in scale-space diffusion); else one plain U-Net where the state keeps one resolution, or a
    `StagedNet` (shared, shared and told the level, or one per level). Attention sizes refer to the finest
    state's resolution."""
    shapes = process.net_shapes()
    (channels, resolution, width), target = shapes[0]
    out_channels = head.output_shape(target)[0]
    heights = sorted({state[1] for state, _ in shapes}, reverse=True)
    if config.layout is NetLayout.UPSAMPLED:
        check_net_shapes(config, process, finest_only=True)
        return UpsampledNet(_unet(config, channels, out_channels, resolution), full_size=(resolution, width),
                            levels=len(heights))  # fmt: skip
    if config.layout is NetLayout.FLEXI or any(state[1:] != target[1:] for state, target in shapes):
        if config.stage_embedding or config.per_stage_nets:  # auto with a process whose targets change size
            raise ConfigError("model.stage_embedding / model.per_stage_nets: expected false with a Flexi-UNet (one "
                              "U-Net entered at each level, which this process needs), got true")  # fmt: skip
        try:
            return FlexiUNet(_unet(config, channels, out_channels, resolution), full_size=(resolution, width),
                             levels=len(heights))  # fmt: skip
        except ValueError as exc:
            message = f"model.channel_mult: {exc} (a Flexi-UNet needs a U-Net level per process level)"
            raise ConfigError(message) from None
    check_net_shapes(config, process)  # a plain U-Net runs whole on every state
    if len(shapes) == 1:
        if config.stage_embedding or config.per_stage_nets:
            raise ConfigError("model.stage_embedding / model.per_stage_nets: expected a process whose state changes "
                              "resolution, got one that keeps one resolution")  # fmt: skip
        return _unet(config, channels, out_channels, resolution)
    if config.per_stage_nets:
        nets = [_unet(config, channels, out_channels, resolution) for _ in shapes]
    else:
        nets = [_unet(config, channels, out_channels, resolution, len(shapes) if config.stage_embedding else 0)]
    return StagedNet(nets, heights=[state[1] for state, _ in shapes], tell_stage=config.stage_embedding)


def check_net_shapes(config: ModelConfig, process: DiffusionProcess, *, finest_only: bool = False) -> None:
    """A ConfigError unless a whole U-Net can run on every state ``process.net_shapes()`` lists (``finest_only``:
    on the finest, where an upsampled layout runs it): it halves height and width len(channel_mult) - 1 times,
    so each must be divisible by 2^(len(channel_mult) - 1). (A Flexi-UNet enters a coarser state further down:
    it needs only the finest state divisible, and checks that itself.)"""
    levels = len(config.channel_mult)
    divisor = 2 ** (levels - 1)
    states = [state for state, _ in process.net_shapes()][: 1 if finest_only else None]
    bad = [(h, w) for _, h, w in states if h % divisor or w % divisor]
    if bad:
        shown = ", ".join(f"{h}x{w}" for _, h, w in states)
        raise ConfigError(
            f"model.channel_mult = {list(config.channel_mult)}: a U-Net of {levels} levels halves its input "
            f"{levels - 1} time(s), so it expects states whose height and width are divisible by {divisor}, "
            f"got {bad[-1][0]}x{bad[-1][1]} (the states it would see: {shown}); choose a data.resolution for "
            f"which every state is divisible by {divisor}{', fewer turning points' if len(states) > 1 else ''}, "
            "or fewer U-Net levels"
        )


def build_denoiser(config: Config, net: nn.Module, process: DiffusionProcess, *, codec: Codec | None = None,
                   autocast: torch.dtype | None = None) -> Denoiser:  # fmt: skip
    return Denoiser(net, process, build_head(config, codec), clip_x0=config.sample.clip_x0,
                    channels_last=config.train.channels_last, pixel_units=config.model.pixel_units,
                    autocast=autocast)  # fmt: skip


def _grid(config: SampleConfig, process: DiffusionProcess) -> Tensor:
    if config.steps > process.num_steps:
        raise ConfigError(f"sample.steps: expected at most process.num_steps = {process.num_steps}, got {config.steps}")
    return process.timesteps(config.steps, config.spacing)


def _ddpm(config: SampleConfig, denoiser: nn.Module, process: DiffusionProcess, x_T: Tensor,
          generator: torch.Generator | None, callback: Callback | None) -> Tensor:  # fmt: skip
    return ddpm_sample(denoiser, process, x_T, _grid(config, process), generator=generator, callback=callback)


def _ddim(config: SampleConfig, denoiser: nn.Module, process: DiffusionProcess, x_T: Tensor,
          generator: torch.Generator | None, callback: Callback | None) -> Tensor:  # fmt: skip
    return ddim_sample(denoiser, process, x_T, _grid(config, process), eta=config.eta, generator=generator,
                       callback=callback)  # fmt: skip


def _adaptive(config: SampleConfig, denoiser: nn.Module, process: DiffusionProcess, x_T: Tensor,
              generator: torch.Generator | None, callback: Callback | None) -> Tensor:  # fmt: skip
    if not process.refills_on_crossing:
        others = ", ".join(k.value for k in SAMPLERS if k is not SamplerKind.ADAPTIVE)
        raise ConfigError(f"sample.sampler: expected {others} for this process (its steps must land on the "
                          f"resolution changes of its own grid), got adaptive")  # fmt: skip
    bounds = torch.tensor([1.0, 0.0], dtype=torch.float64)
    return adaptive_sample(denoiser, process, x_T, bounds, base_step=config.base_step,
                           min_step=config.min_step, max_step=config.max_step, eta=config.eta,
                           generator=generator, callback=callback)  # fmt: skip


# (sample config, denoiser, process, x_T, generator, callback) -> samples; one row per SamplerKind
SAMPLERS: dict[SamplerKind, Callable[..., Tensor]] = {
    SamplerKind.DDPM: _ddpm,
    SamplerKind.DDIM: _ddim,
    SamplerKind.ADAPTIVE: _adaptive,
}


def run_sampler(
    config: SampleConfig,
    denoiser: nn.Module,
    process: DiffusionProcess,
    n: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
) -> Tensor:
    """Draw n samples with the configured sampler, starting from the process's prior."""
    x_T = process.prior_sample(n, generator=generator, device=device)
    if config.corrector_steps > 0:
        process = _corrected(config, process, denoiser)
    return SAMPLERS[config.sampler](config, denoiser, process, x_T, generator, callback)


@torch.no_grad()
def sample_images(
    config: SampleConfig,
    denoiser: nn.Module,
    codec: Codec,
    n: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
) -> Tensor:
    """n images (n, C, H, W) in [-1, 1]: `run_sampler` on the codec's latents, then ``codec.decode``. A
    `Denoiser` samples with its head's own choices under ``config`` (`Head.with_sampling`)."""
    process = denoiser.process
    if isinstance(denoiser, Denoiser):
        denoiser = denoiser.with_head(denoiser.head.with_sampling(config, generator))
    return codec.decode(run_sampler(config, denoiser, process, n, generator=generator, device=device,
                                    callback=callback))  # fmt: skip


def _corrected(config: SampleConfig, process: DiffusionProcess, denoiser: nn.Module) -> DiffusionProcess:
    """``process`` with Langevin steps on the complement refilled at each upward crossing."""
    if len(process.net_shapes()) == 1 or not hasattr(process, "score"):
        raise ConfigError(f"sample.corrector_steps: expected 0 for a process that never crosses up "
                          f"({type(process).__name__}), got {config.corrector_steps}")  # fmt: skip
    langevin = ComplementLangevin(process, config.corrector_steps, config.corrector_snr)  # type: ignore[arg-type]
    return CorrectedProcess(process, langevin, denoiser)
