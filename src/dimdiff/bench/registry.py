"""The methods `dimdiff bench` compares, one builder per method family.

A method is a label and a complete dimdiff `Config`: `codec.kind` and `process.kind` pick the space and
the forward process, `sample` the sampler, and the `model` section is the U-Net shared by every method
of a run. A family (a codec x process pair, with its samplers) joins the benchmarks by adding one entry
to `METHOD_BUILDERS`, keyed by its `MethodFamily`; no class is looked up by a string. The reference of
every ratio is full-resolution DDIM on pixels (key ``ddim``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dimdiff.build import build_codec, data_channels, fit_to_data, needs_data  # data_channels: re-exported
from dimdiff.codecs import CODECS, Codec, CodecKind, OPQOptions, PQOptions, RQOptions, VQOptions
from dimdiff.config import (
    CodecConfig,
    Config,
    ConfigError,
    LossWeighting,
    NetLayout,
    ProcessKind,
    SamplerKind,
    config_to_dict,
)
from dimdiff.data.configured import training_data
from dimdiff.heads import HeadKind
from dimdiff.process.dvdp_options import DVDPOptions, SubspaceOptions
from dimdiff.process.gaussian import GaussianOptions
from dimdiff.process.kinds import PROCESSES
from dimdiff.process.parameterization import Parameterization
from dimdiff.process.scale_space import ScaleSpaceOptions

__all__ = [
    "REFERENCE_KEY", "METHOD_BUILDERS", "BenchMethod", "MethodFamily", "available_methods", "unregistered_kinds",
    "select_methods", "reference_method", "training_groups", "data_channels", "with_data_statistics",
]  # fmt: skip

REFERENCE_KEY = "ddim"  # full-resolution DDIM (Gaussian process, eta = 0): the denominator of ratios


class MethodFamily(str, enum.Enum):
    GAUSSIAN = "gaussian"  # pixels x Gaussian process: DDIM (the reference) and DDPM
    DVDP = "dvdp"  # pixels x DVDP: shared U-Net, and one U-Net per stage
    SUBSPACE = "subspace"  # pixels x subspace diffusion
    SSD = "ssd"  # pixels x scale-space diffusion, on a Flexi-UNet
    LATENT = "latent"  # quantized codes x Gaussian process (continuous), and the categorical head on PQ codes


@dataclass(frozen=True)
class BenchMethod:
    key: str  # short name for --methods, e.g. "ddim"
    name: str  # label in tables and plots
    config: Config  # process.kind selects the process; model is the shared U-Net config
    default: bool = True  # run when --methods names none; False: only when named


def _ddim_and_ddpm(config: Config, keys: tuple[str, str], names: tuple[str, str],
                   default: bool = True) -> list[BenchMethod]:  # fmt: skip
    """``config`` sampled by DDIM (eta 0) and by ancestral DDPM, as two methods."""
    ddim = dataclasses.replace(config.sample, sampler=SamplerKind.DDIM, eta=0.0)
    ddpm = dataclasses.replace(config.sample, sampler=SamplerKind.DDPM)
    return [BenchMethod(keys[0], names[0], dataclasses.replace(config, sample=ddim), default),
            BenchMethod(keys[1], names[1], dataclasses.replace(config, sample=ddpm), default)]  # fmt: skip


def _gaussian_methods(base: Config) -> list[BenchMethod]:
    """Full-resolution DDPM/DDIM on the Gaussian variance-preserving process."""
    return _ddim_and_ddpm(_on(base, ProcessKind.GAUSSIAN, GaussianOptions()), (REFERENCE_KEY, "ddpm"),
                          ("DDIM (full res.)", "DDPM ancestral (full res.)"))  # fmt: skip


def _on(base: Config, kind: ProcessKind, options: object, **process: object) -> Config:
    """``base`` with the pixel codec and the process ``kind`` with ``options`` (and other ``process`` fields)."""
    process = dataclasses.replace(base.process, kind=kind, options=options, **process)
    return dataclasses.replace(base, process=process, codec=dataclasses.replace(base.codec, kind=CodecKind.PIXEL,
                                                                                 options=None))  # fmt: skip


def _base_turning_points(base: Config) -> tuple[float, ...]:
    return tuple(getattr(base.process.options, "turning_points", ()))


# 32 -> 16 -> 8 (docs/dvdp.md section 7)
DVDP_DEFAULT_STAGES = DVDPOptions(turning_points=(0.3, 0.6), window_widths=(0.2, 0.2))


def _dvdp_methods(base: Config) -> list[BenchMethod]:
    """DVDP with the base config's turning points, else the design's 32 -> 16 -> 8 placement:
    with the base model, and (only when named) with one U-Net of that architecture per stage."""
    own = base.process.options if isinstance(base.process.options, DVDPOptions) and _base_turning_points(base) else None
    dvdp = _on(base, ProcessKind.DVDP, own or DVDP_DEFAULT_STAGES)
    per_stage = dataclasses.replace(dvdp, model=dataclasses.replace(base.model, per_stage_nets=True,
                                                                    stage_embedding=False))  # fmt: skip
    flexi_model = dataclasses.replace(base.model, layout=NetLayout.FLEXI, per_stage_nets=False, stage_embedding=False)
    flexi = dataclasses.replace(dvdp, model=flexi_model)
    taus = "/".join(f"{t:g}" for t in dvdp.process.options.turning_points)
    return [
        *_ddim_and_ddpm(dvdp, ("dvdp-ddim", "dvdp-ddpm"), (f"DVDP DDIM (tau {taus})", f"DVDP ancestral (tau {taus})")),
        *_ddim_and_ddpm(per_stage, ("dvdp-perstage-ddim", "dvdp-perstage-ddpm"),
                        (f"DVDP DDIM, U-Net per stage (tau {taus})", f"DVDP ancestral, U-Net per stage (tau {taus})"),
                        default=False),
        *_ddim_and_ddpm(flexi, ("dvdp-flexi-ddim", "dvdp-flexi-ddpm"),
                        (f"DVDP DDIM, Flexi-UNet (tau {taus})", f"DVDP ancestral, Flexi-UNet (tau {taus})"),
                        default=False),
    ]  # fmt: skip


def _subspace_methods(base: Config) -> list[BenchMethod]:
    """Subspace diffusion (no attenuation, approximate crossing) at the same switch times as DVDP;
    process.complement_std is estimated from the data where training or `with_data_statistics` needs it."""
    taus = _base_turning_points(base) or DVDP_DEFAULT_STAGES.turning_points
    label = "/".join(f"{t:g}" for t in taus)
    return _ddim_and_ddpm(_on(base, ProcessKind.SUBSPACE, SubspaceOptions(taus)), ("subspace-ddim", "subspace-ddpm"),
                          (f"Subspace DDIM (switch {label})", f"Subspace ancestral (switch {label})"))  # fmt: skip


def _ssd_methods(base: Config) -> list[BenchMethod]:
    """Scale-space diffusion with the base config's levels, else min(3, the U-Net's levels) (32 -> 16 -> 8 at
    32 px), x0-prediction (its only parameterization) weighted by min(SNR, 5) as its authors train it, on a
    Flexi-UNet of the base architecture; only when named: with one level fewer, and on the plain U-Net with
    upsampled inputs (model.layout = upsampled, the authors' comparison)."""
    own = base.process.options if isinstance(base.process.options, ScaleSpaceOptions) else None
    options = own or ScaleSpaceOptions(levels=min(3, len(base.model.channel_mult)))
    train = dataclasses.replace(base.train, loss_weighting=LossWeighting.MIN_SNR, min_snr_gamma=5.0)
    variants = ((options.levels, NetLayout.FLEXI, "ssd", "", True),
                (options.levels - 1, NetLayout.FLEXI, "ssd-fewer", "", False),
                (options.levels, NetLayout.UPSAMPLED, "ssd-upsampled", ", plain U-Net", False))  # fmt: skip
    methods = []
    for levels, layout, key, net, default in variants:
        if levels < 2 and key != "ssd":  # one level is the Gaussian process: no variants of it
            continue
        config = _on(base, ProcessKind.SSD, dataclasses.replace(options, levels=levels),
                     parameterization=Parameterization.X0)  # fmt: skip
        model = dataclasses.replace(base.model, layout=layout, per_stage_nets=False, stage_embedding=False)
        config = dataclasses.replace(config, model=model, train=train)
        names = (f"SSD deterministic ({levels} levels{net})", f"SSD ancestral ({levels} levels{net})")
        methods += _ddim_and_ddpm(config, (f"{key}-ddim", f"{key}-ddpm"), names, default)
    return methods


# DVDP on a code grid: one halving, at t = 0.5
LATENT_DVDP_STAGES = DVDPOptions(turning_points=(0.5,), window_widths=(0.2,))

# The quantized codecs of the latent family: 4 codebooks of 256 sorted words (VQ: one), fitted quickly
LATENT_CODECS = {CodecKind.VQ: VQOptions, CodecKind.PQ: PQOptions, CodecKind.OPQ: OPQOptions, CodecKind.RQ: RQOptions}


def _latent_methods(base: Config) -> list[BenchMethod]:
    """The Gaussian process on the code grid of each quantized codec (4 x 4 patches, 2 x 2 below 16 px), and on
    PQ codes the categorical head and DVDP (one halving at t = 0.5); only when named. The U-Net is the base one,
    its attention sizes scaled to the grid (H / s_q)."""
    s = 4 if base.data.resolution >= 16 else 2
    attention = tuple(r // s for r in base.model.attention_resolutions if r >= s)
    model = dataclasses.replace(base.model, attention_resolutions=attention, per_stage_nets=False,
                                stage_embedding=False, layout=NetLayout.AUTO)  # fmt: skip
    gaussian = dataclasses.replace(_on(base, ProcessKind.GAUSSIAN, GaussianOptions()), model=model)
    methods = []
    for kind, options in LATENT_CODECS.items():
        codebooks = {} if kind is CodecKind.VQ else {"num_codebooks": 4}
        codec = CodecConfig(kind, options(patch_size=s, codebook_size=256, iterations=10, fit_images=1024,
                                          **codebooks))  # fmt: skip
        config = dataclasses.replace(gaussian, codec=codec)
        name = f"{kind.value.upper()} codes (s {s}, M {codebooks.get('num_codebooks', 1)}, K 256)"
        methods += _ddim_and_ddpm(config, (f"latent-{kind.value}-ddim", f"latent-{kind.value}-ddpm"),
                                  (f"DDIM on {name}", f"DDPM on {name}"), default=False)  # fmt: skip
        if kind is CodecKind.PQ:
            categorical = dataclasses.replace(config, model=dataclasses.replace(model, head=HeadKind.CATEGORICAL))
            methods += _ddim_and_ddpm(categorical, ("latent-cat-ddim", "latent-cat-ddpm"),
                                      (f"DDIM, categorical, on {name}", f"DDPM, categorical, on {name}"),
                                      default=False)  # fmt: skip
            dvdp = dataclasses.replace(_on(config, ProcessKind.DVDP, LATENT_DVDP_STAGES), codec=codec)
            methods += _ddim_and_ddpm(dvdp, ("latent-dvdp-ddim", "latent-dvdp-ddpm"),
                                      (f"DVDP DDIM (tau 0.5) on {name}", f"DVDP ancestral (tau 0.5) on {name}"),
                                      default=False)  # fmt: skip
    return methods


# One entry per method family; a new codec x process pair adds `MethodFamily.X: _x_methods` here.
METHOD_BUILDERS: dict[MethodFamily, Callable[[Config], list[BenchMethod]]] = {
    MethodFamily.GAUSSIAN: _gaussian_methods,
    MethodFamily.DVDP: _dvdp_methods,
    MethodFamily.SUBSPACE: _subspace_methods,
    MethodFamily.SSD: _ssd_methods,
    MethodFamily.LATENT: _latent_methods,
}


def with_data_statistics(config: Config) -> tuple[Config, Codec]:
    """``config`` with what its process estimates from the configured data filled in (subspace:
    process.complement_std), and its codec fitted where it learns, for benches that build a model untrained."""
    return fit_to_data(config, training_data(config)) if needs_data(config) else (config, build_codec(config.codec))


def available_methods(base: Config) -> list[BenchMethod]:
    """Every registered method built on ``base``, in `MethodFamily` order (the reference first)."""
    methods = [m for family in MethodFamily if family in METHOD_BUILDERS for m in METHOD_BUILDERS[family](base)]
    keys = [m.key for m in methods]
    if len(set(keys)) != len(keys) or REFERENCE_KEY not in keys:
        raise ValueError(f"expected unique method keys including {REFERENCE_KEY!r}, got {keys}")
    return sorted(methods, key=lambda m: m.key != REFERENCE_KEY)


def unregistered_kinds() -> list[str]:
    """Process and codec kinds that are registered but that no benchmark method uses yet, as
    ``process.kind = x`` / ``codec.kind = y``."""
    methods = available_methods(Config())
    used = {("process", m.config.process.kind) for m in methods} | {("codec", m.config.codec.kind) for m in methods}
    return [f"{name}.kind = {kind.value}" for name, table in (("process", PROCESSES), ("codec", CODECS))
            for kind in table if (name, kind) not in used]  # fmt: skip


def select_methods(methods: Sequence[BenchMethod], keys: Sequence[str] | None) -> list[BenchMethod]:
    """The methods named by ``keys`` (the default ones when None), always with the reference, in
    registry order."""
    if not keys:
        return [m for m in methods if m.default]
    valid = [m.key for m in methods]
    bad = [k for k in keys if k not in valid]
    if bad:
        raise ConfigError(f"--methods: expected keys among {', '.join(valid)}, got {', '.join(bad)}")
    return [m for m in methods if m.key in keys or m.key == REFERENCE_KEY]


def reference_method(methods: Sequence[BenchMethod]) -> BenchMethod:
    for method in methods:
        if method.key == REFERENCE_KEY:
            return method
    raise ValueError(f"expected the reference method {REFERENCE_KEY!r} among {[m.key for m in methods]}")


def _training_key(config: Config) -> str:
    """What decides the cost and result of training: every section but `sample`."""
    return json.dumps({k: v for k, v in config_to_dict(config).items() if k != "sample"}, sort_keys=True)


def training_groups(methods: Sequence[BenchMethod]) -> list[list[BenchMethod]]:
    """Methods that train the same model (they differ only in the sampler), grouped in order."""
    groups: dict[str, list[BenchMethod]] = {}
    for method in methods:
        groups.setdefault(_training_key(method.config), []).append(method)
    return list(groups.values())
