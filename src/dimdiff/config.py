"""Experiment configuration: frozen dataclasses per section, TOML files, ``section.key=value``.

A configuration file has the sections ``[model]``, ``[process]``, ``[codec]``, ``[data]``, ``[train]``
and ``[sample]``; every key is optional (defaults below). Unknown sections or keys and values of
the wrong type are errors that name the key and list the valid choices. The resolved
configuration is saved as JSON with every checkpoint, so sampling reads exactly what training
used.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dimdiff.codecs import CODECS, CodecKind, CodecOptions, codec_kind
from dimdiff.config_values import coerce, plain
from dimdiff.data import DIGITS_RESOLUTIONS, DatasetName
from dimdiff.errors import ConfigError, check_option
from dimdiff.heads import CodeChoice, HeadKind, LossWeighting
from dimdiff.process.kinds import PROCESSES, ProcessKind, ProcessOptions, process_kind
from dimdiff.process.parameterization import Parameterization
from dimdiff.process.schedules import ScheduleName
from dimdiff.process.timesteps import Spacing

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "CodecConfig", "Config", "ConfigError", "DataConfig", "Device", "LossWeighting", "ModelConfig", "NetLayout",
    "Precision",
    "ProcessConfig", "ProcessKind", "SampleConfig", "SamplerKind", "TrainConfig",
    "apply_overrides", "config_from_dict", "config_to_dict", "load_config", "replace_section",
]  # fmt: skip


class Precision(str, enum.Enum):
    FP32 = "fp32"
    BF16 = "bf16"  # autocast bfloat16 (CPU or CUDA; slow on CPUs without native bf16)
    FP16 = "fp16"  # autocast float16 with gradient scaling (CUDA only)


class Device(str, enum.Enum):
    AUTO = "auto"  # cuda when available, else cpu
    CPU = "cpu"
    CUDA = "cuda"


class SamplerKind(str, enum.Enum):
    DDPM = "ddpm"  # ancestral, every step draws from the posterior
    DDIM = "ddim"  # DDIM(eta)
    ADAPTIVE = "adaptive"  # complexity-chosen step sizes


class NetLayout(str, enum.Enum):
    """How one U-Net serves a process whose state changes resolution."""

    AUTO = "auto"  # the whole U-Net on each state; a Flexi-UNet where a target lies at another size (ssd)
    FLEXI = "flexi"  # one Flexi-UNet entered at each state's level (each U-Net level sees one scale)
    UPSAMPLED = "upsampled"  # the whole U-Net at the data's resolution, each state upsampled to it


@dataclass(frozen=True)
class ModelConfig:
    base_channels: int = 32  # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per level
    num_res_blocks: int = 1  # residual blocks per level
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sizes (px, at data resolution) with attention
    num_heads: int = 4  # attention heads
    dropout: float = 0.0  # dropout inside residual blocks
    scale_shift: bool = True  # time injection: scale-shift (ADM) or additive (DDPM)
    stage_embedding: bool = False  # dvdp/subspace: the shared U-Net also learns an embedding of the stage
    per_stage_nets: bool = False  # dvdp/subspace: one U-Net per stage (same architecture) instead of one shared
    # dvdp/subspace: the net sees a stage-k state divided by 2^k (average-pooled pixel units, the
    # data's scale at every stage) and its output is multiplied by 2^k; false: orthonormal coordinates
    pixel_units: bool = True
    # for a process whose state changes resolution: auto, flexi (one Flexi-UNet entered at each level) or
    # upsampled (a plain full-resolution U-Net on every state, upsampled; ssd's comparison without Flexi-UNet)
    layout: NetLayout = NetLayout.AUTO
    # what the network outputs: regression (eps, x0 or v, process.parameterization) or categorical (logits over
    # each codebook's words at every position of a quantized codec's code grid)
    head: HeadKind = HeadKind.REGRESSION

    def __post_init__(self) -> None:
        check_option(not (self.stage_embedding and self.per_stage_nets), "model.stage_embedding",
               "false with model.per_stage_nets = true (each stage's own net already knows its stage)",
               self.stage_embedding)  # fmt: skip
        check_option(self.base_channels >= 1, "model.base_channels", "an integer >= 1", self.base_channels)
        check_option(len(self.channel_mult) >= 1 and min(self.channel_mult) >= 1, "model.channel_mult",
               "a non-empty list of integers >= 1", list(self.channel_mult))  # fmt: skip
        check_option(self.num_res_blocks >= 1, "model.num_res_blocks", "an integer >= 1", self.num_res_blocks)
        check_option(self.num_heads >= 1, "model.num_heads", "an integer >= 1", self.num_heads)
        check_option(0.0 <= self.dropout < 1.0, "model.dropout", "a value in [0, 1)", self.dropout)


@dataclass(frozen=True)
class ProcessConfig:
    kind: ProcessKind = ProcessKind.GAUSSIAN  # which forward process (a row of process.kinds.PROCESSES)
    schedule: ScheduleName = ScheduleName.LINEAR  # noise schedule
    num_steps: int = 1000  # T, the discrete steps sampler grids refer to
    parameterization: Parameterization = Parameterization.EPS  # what the network predicts
    # the kind's own options (e.g. dvdp: turning_points, window_widths, window), written flat in [process];
    # None = the kind's defaults
    options: ProcessOptions | None = None

    def __post_init__(self) -> None:
        check_option(self.num_steps >= 1, "process.num_steps", "an integer >= 1", self.num_steps)
        _fill_options(self, PROCESSES[process_kind(self.kind)], "process")
        allowed = self.options.parameterizations()
        check_option(self.parameterization in allowed, "process.parameterization",
                     f"{' or '.join(p.value for p in allowed)} for process.kind = {self.kind.value}",
                     self.parameterization.value)  # fmt: skip


@dataclass(frozen=True)
class CodecConfig:
    kind: CodecKind = CodecKind.PIXEL  # images -> the space the process runs on (pixel: the images themselves)
    options: CodecOptions | None = None  # the kind's own options, written flat in [codec]; None = its defaults

    def __post_init__(self) -> None:
        _fill_options(self, CODECS[codec_kind(self.kind)], "codec")


def _fill_options(section: Any, cls: type, name: str) -> None:
    """Give ``section`` its kind's default options, or refuse options of another kind."""
    if section.options is None:
        object.__setattr__(section, "options", cls())
    elif not isinstance(section.options, cls):
        raise ConfigError(f"{name}.options: expected {cls.__name__} for {name}.kind = {section.kind.value}, "
                          f"got {type(section.options).__name__}")  # fmt: skip


@dataclass(frozen=True)
class DataConfig:
    name: DatasetName = DatasetName.DIGITS  # dataset
    path: str | None = None  # folder / file for folder, cifar10 and npz
    resolution: int = 16  # training resolution (px, square)
    channels: int | None = None  # 1 or 3; None = the dataset's own
    hflip: bool = False  # random horizontal flips
    num_patches: int = 10000  # crops drawn for `patches`
    skip_bad_files: bool = False  # skip (and count) undecodable images instead of failing
    num_workers: int = 0  # DataLoader worker processes

    def __post_init__(self) -> None:
        check_option(self.resolution >= 4, "data.resolution", "an integer >= 4", self.resolution)
        check_option(self.channels in (None, 1, 3), "data.channels", "1, 3 or unset", self.channels)
        check_option(self.num_workers >= 0, "data.num_workers", "an integer >= 0", self.num_workers)
        check_option(self.name is not DatasetName.DIGITS or self.resolution in DIGITS_RESOLUTIONS, "data.resolution",
                     f"resolution in {{{', '.join(map(str, DIGITS_RESOLUTIONS))}}} for digits", self.resolution)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000  # optimizer steps
    batch_size: int = 64  # examples per step, over all processes
    lr: float = 2e-4  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 100  # linear learning-rate warm-up
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    grad_accum: int = 1  # micro-batches per optimizer step
    ema_decay: float = 0.999  # EMA decay (after warm-up)
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n))
    loss_weighting: LossWeighting = LossWeighting.MSE  # per-example loss weight
    min_snr_gamma: float = 5.0  # gamma of min-SNR weighting
    complexity_lambda: float = 0.0  # weight of the complexity-weighted L1 term (0 = off)
    label_smoothing: float = 0.0  # categorical head: label smoothing of the cross-entropy
    image_loss_weight: float = 0.0  # categorical head: weight of the image-space term (Gumbel-softmax decode)
    gumbel_temperature: float = 1.0  # categorical head: tau_G of the Gumbel-softmax relaxation
    precision: Precision = Precision.FP32  # autocast precision
    compile: bool = False  # torch.compile the network (slow start per resolution)
    channels_last: bool = False  # channels-last memory format
    device: Device = Device.AUTO  # cpu or cuda
    threads: int = 0  # torch CPU threads that `dimdiff train` sets (0 = torch's default)
    seed: int = 0  # seeds data order, t, noise and initial weights
    out_dir: str = "runs/default"  # where checkpoints, logs and pictures go
    checkpoint_every: int = 500  # steps between checkpoints (the last step always saves)
    keep_last: int = 3  # checkpoints kept
    sample_every: int = 0  # steps between sample grids (0 = only at the end)
    log_every: int = 10  # steps between JSONL metric lines
    sample_n: int = 64  # images in each sample grid
    divergence_factor: float = 20.0  # a loss above this x its running median diverges (0 = no divergence guard)
    divergence_patience: int = 10  # diverging steps in a row that stop the run

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "grad_accum", "checkpoint_every", "keep_last", "log_every", "sample_n"):
            check_option(getattr(self, key) >= 1, f"train.{key}", "an integer >= 1", getattr(self, key))
        check_option(math.isfinite(self.lr) and self.lr > 0, "train.lr", "a finite value > 0", self.lr)
        for key in ("weight_decay", "grad_clip", "warmup_steps", "sample_every"):
            check_option(getattr(self, key) >= 0, f"train.{key}", "a value >= 0", getattr(self, key))
        check_option(0.0 <= self.ema_decay < 1.0, "train.ema_decay", "a value in [0, 1)", self.ema_decay)
        check_option(self.threads >= 0, "train.threads", "an integer >= 0", self.threads)
        check_option(self.divergence_factor == 0 or self.divergence_factor > 1, "train.divergence_factor",
                     "0 (off) or a value > 1", self.divergence_factor)  # fmt: skip
        check_option(self.divergence_patience >= 1, "train.divergence_patience", "an integer >= 1",
                     self.divergence_patience)  # fmt: skip
        check_option(self.min_snr_gamma > 0, "train.min_snr_gamma", "a value > 0", self.min_snr_gamma)
        check_option(self.complexity_lambda >= 0, "train.complexity_lambda", "a value >= 0", self.complexity_lambda)
        check_option(0 <= self.label_smoothing < 1, "train.label_smoothing", "a value in [0, 1)", self.label_smoothing)
        check_option(self.image_loss_weight >= 0, "train.image_loss_weight", "a value >= 0", self.image_loss_weight)
        check_option(self.gumbel_temperature > 0, "train.gumbel_temperature", "a value > 0", self.gumbel_temperature)
        check_option(self.batch_size % self.grad_accum == 0, "train.batch_size",
               f"a multiple of train.grad_accum = {self.grad_accum}", self.batch_size)  # fmt: skip


@dataclass(frozen=True)
class SampleConfig:
    sampler: SamplerKind = SamplerKind.DDIM  # sampler for grids and `dimdiff sample`
    steps: int = 50  # network evaluations (ddpm, ddim)
    eta: float = 0.0  # DDIM eta (0 deterministic, 1 = DDPM posterior)
    spacing: Spacing = Spacing.TRAILING  # timestep grid
    clip_x0: bool = True  # clamp x0 estimates to [-1, 1]
    base_step: float = 0.005  # adaptive: dt = base_step / complexity
    min_step: float = 0.005  # adaptive: smallest dt
    max_step: float = 0.05  # adaptive: largest dt
    use_ema: bool = True  # sample with the EMA weights
    corrector_steps: int = 0  # dvdp/subspace: Langevin steps on the refilled complement after each upward crossing
    corrector_snr: float = 0.1  # target signal-to-noise ratio r that sets the Langevin step size
    code_choice: CodeChoice = CodeChoice.ARGMAX  # categorical head: argmax, draw or mean of each position's words
    code_temperature: float = 1.0  # categorical head: softmax temperature when sampling
    code_smoothing: float = 0.0  # categorical head: mix of the predicted distribution with the uniform one

    def __post_init__(self) -> None:
        check_option(self.steps >= 1, "sample.steps", "an integer >= 1", self.steps)
        check_option(0 <= self.eta <= 1, "sample.eta", "a value in [0, 1] (1 is the DDPM posterior)", self.eta)
        check_option(0 < self.min_step <= self.max_step, "sample.min_step",
               f"a value in (0, sample.max_step = {self.max_step}]", self.min_step)  # fmt: skip
        check_option(self.base_step > 0, "sample.base_step", "a value > 0", self.base_step)
        check_option(self.corrector_steps >= 0, "sample.corrector_steps", "an integer >= 0", self.corrector_steps)
        check_option(self.corrector_snr > 0, "sample.corrector_snr", "a value > 0", self.corrector_snr)
        check_option(self.code_temperature > 0, "sample.code_temperature", "a value > 0", self.code_temperature)
        check_option(0 <= self.code_smoothing <= 1, "sample.code_smoothing", "a value in [0, 1]", self.code_smoothing)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        check_option(self.sample.steps <= self.process.num_steps, "sample.steps",
               f"at most process.num_steps = {self.process.num_steps}", self.sample.steps)  # fmt: skip
        staged = self.process.options.num_levels() > 1  # the state changes resolution
        one_level = f"for this process (process.kind = {self.process.kind.value}: its state keeps one resolution)"
        m = self.model
        for key, on in (("model.stage_embedding", m.stage_embedding), ("model.per_stage_nets", m.per_stage_nets)):
            check_option(staged or not on, key, f"false {one_level}", on)
        check_option(staged or m.layout is NetLayout.AUTO, "model.layout", f"auto {one_level}", m.layout.value)
        whole = m.layout is NetLayout.AUTO or not (m.stage_embedding or m.per_stage_nets)
        check_option(whole, "model.layout", "auto with model.stage_embedding or model.per_stage_nets (one U-Net "
                     "serves every level in the other layouts)", m.layout.value)  # fmt: skip
        check_option(staged or self.sample.corrector_steps == 0, "sample.corrector_steps",
               f"0 {one_level}", self.sample.corrector_steps)  # fmt: skip
        if m.head is HeadKind.CATEGORICAL:  # logits over codewords at the full code grid
            check_option(self.codec.kind is not CodecKind.PIXEL, "codec.kind", "a quantized codec (vq, pq, opq, "
                         "rq) for model.head = categorical (its logits are over codewords)", self.codec.kind.value)
            check_option(self.process.kind is ProcessKind.GAUSSIAN, "process.kind", "gaussian for model.head = "
                         "categorical (its x0 estimate is the whole code grid at every t)", self.process.kind.value)


SECTIONS: dict[str, type] = {
    "model": ModelConfig, "process": ProcessConfig, "codec": CodecConfig, "data": DataConfig, "train": TrainConfig,
    "sample": SampleConfig,
}  # fmt: skip


# Sections whose `kind` picks a row of a registry: the row's options class holds the kind's own keys,
# written flat in the section beside the section's common keys.
KIND_TABLES: dict[str, tuple[Mapping[Any, type], Callable[[Any], enum.Enum]]] = {
    "process": (PROCESSES, process_kind), "codec": (CODECS, codec_kind),
}  # fmt: skip

# Keys that every kind's [process] had before each kind got options of its own, with the value that meant
# "unused": dropped where the kind has no such key. A section holding all of them is a config.json of that
# time (which checked that a kind never used the others): there the keys the kind lacks are dropped as they are.
LEGACY_UNUSED: dict[str, dict[str, Any]] = {
    "process": {"turning_points": [], "window_widths": [], "complement_std": [], "window": "none"},
}

# Keys of earlier versions that another key replaced: how an old value reads now (old config.json files load).
LEGACY_RENAMED: dict[str, dict[str, Callable[[Any], dict[str, Any]]]] = {
    "model": {"flexi": lambda on: {"layout": NetLayout.FLEXI.value} if coerce("model.flexi", bool, on) else {}},
}


def _names(cls: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _build_dataclass(cls: type, name: str, values: dict[str, Any], valid: list[str], context: str = "",
                     **ready: Any) -> Any:  # fmt: skip
    """``cls`` from ``values`` coerced to its field types; ``ready``: fields given as they are."""
    hints = typing.get_type_hints(cls)
    for key in values:
        if key not in valid:
            raise ConfigError(f"unknown key '{name}.{key}'{context}; valid keys in [{name}]: {', '.join(valid)}")
    return cls(**{k: coerce(f"{name}.{k}", hints[k], v) for k, v in values.items() if k in hints}, **ready)


def _build_section(name: str, values: dict[str, Any]) -> Any:
    cls = SECTIONS[name]
    for old, new in LEGACY_RENAMED.get(name, {}).items():
        if old in values:  # what the old key meant, unless the file also says it the new way
            values = new(values[old]) | {k: v for k, v in values.items() if k != old}
    if name not in KIND_TABLES:
        return _build_dataclass(cls, name, values, _names(cls))
    table, lookup = KIND_TABLES[name]
    kind = lookup(values.get("kind", next(f.default for f in dataclasses.fields(cls) if f.name == "kind")))
    common = [k for k in _names(cls) if k not in ("kind", "options")]
    own = _names(table[kind])
    legacy = LEGACY_UNUSED.get(name, {})
    old_file = bool(legacy) and set(legacy) <= set(values)
    values = {k: v for k, v in values.items()
              if k in own or k not in legacy or not (old_file or plain(v) == legacy[k])}  # fmt: skip
    valid, context = ["kind", *common, *own], f" for {name}.kind = {kind.value}"
    options = _build_dataclass(table[kind], name, {k: v for k, v in values.items() if k not in ("kind", *common)},
                               valid, context)  # fmt: skip
    return _build_dataclass(cls, name, {k: v for k, v in values.items() if k in common}, valid, context,
                            kind=kind, options=options)  # fmt: skip


def _section_values(section: Any) -> dict[str, Any]:
    """A section's keys as a config file writes them (a kind's options flat beside the common keys)."""
    values = {k: getattr(section, k) for k in _names(section) if k != "options"}
    options = getattr(section, "options", None)
    return values | ({k: getattr(options, k) for k in _names(options)} if options is not None else {})


def replace_section(section: Any, **changes: Any) -> Any:
    """A config section with ``changes`` applied, each value coerced and checked as in a config file
    (``sampler="ddim"`` becomes SamplerKind.DDIM; a bad key or value is a ConfigError naming it). A change
    of ``kind`` starts from the new kind's default options."""
    name = next(n for n, cls in SECTIONS.items() if isinstance(section, cls))
    current = _section_values(section)
    if "kind" in changes and plain(changes["kind"]) != plain(section.kind):
        current = {k: v for k, v in current.items() if k in _names(section)}
    return _build_section(name, {**current, **changes})


def config_from_dict(raw: dict[str, Any]) -> Config:
    """A Config from nested plain values (a parsed TOML file or a checkpoint's config.json)."""
    for name, values in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section '{name}'; valid sections: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{name}' must be a table, got {values!r}")
    return Config(**{name: _build_section(name, raw.get(name, {})) for name in SECTIONS})


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Plain JSON-able values (enums as their values, tuples as lists), a kind's options flat in its section."""
    return {name: {k: plain(v) for k, v in _section_values(getattr(config, name)).items()} for name in SECTIONS}


def _parse_override(text: str) -> tuple[str, str, Any]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"expected an override of the form section.key=value, got {text!r}")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as digits or ddim
    return section, key, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``raw`` with ``section.key=value`` overrides applied (values parsed as TOML)."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides:
        section, key, value = _parse_override(text)
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown config section '{section}' in override {text!r}; valid sections: {', '.join(SECTIONS)}"
            )
        merged.setdefault(section, {})[key] = value
    return merged


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a TOML file (or only defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        if not path.is_file():
            raise ConfigError(f"expected a TOML config file, got the folder {path}")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"expected a TOML config file (UTF-8 text), got binary data in {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"cannot parse {path}: {exc}") from None
    return config_from_dict(apply_overrides(raw, list(overrides)))


def dumps(config: Config) -> str:
    return json.dumps(config_to_dict(config), indent=2, sort_keys=False)
