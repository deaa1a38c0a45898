"""Quantized patch codecs (VQ, PQ, OPQ, RQ) on colour photographs: PSNR / SSIM at compression ratios 1:64,
1:32 and ~1:24 against 24-bit RGB, what sorting the codebooks does to their order, and encode / decode speed.

1. Compression table. Scored on scikit-image's bundled colour photographs astronaut, coffee, chelsea, rocket
   and the left image of stereo_motorcycle (each centre-cropped to a multiple of 8 px, in [-1, 1]). The
   codebooks are fitted on OTHER bundled colour images that need no download: immunohistochemistry,
   hubble_deep_field, retina, colorwheel and logo (alpha dropped), as random crops (``--crops`` of
   ``--crop-size`` px, taken in turn from each image). Not used for fitting: cat (the same photograph as
   chelsea), the right image of stereo_motorcycle (the same scene), and lily / skin / kidney (need a download).
   Ratio = 24 s^2 / (M log2 K). PQ, OPQ and RQ use s = 8 with K = 256 and M = 3, 6, 8 (1:64, 1:32, 1:24);
   VQ (one codebook) reaches the same ratios with smaller patches: s = 4, K = 64 (1:64); s = 4, K = 4096
   (1:32); s = 2, K = 16 (1:24). (VQ at s = 8 would need K = 2^24 for 1:64.) PSNR and SSIM are means of
   the per-image values (dimdiff.metrics, data range 2, 11-tap Gaussian SSIM).
1b. Leave-one-out check of the training domain (``--loo-ratios``, default 1:32): every scored photograph is
   scored by codecs fitted on ``--loo-crops`` random crops of the other four scored photographs only (five
   fits per codec), so fitting and scoring images are still disjoint but of the same kind (photographs).
2. Ordering. For each codec at its 1:32 setting: the mean Euclidean distance between consecutive codewords,
   and the image MSE of an index error of one (`QuantizedCodec.index_error_mse`, mean over the scored
   images), with the sorted (pseudo-ordinal) codebooks and with the words in random order
   (`codec_tool.shuffled_codec`, the arbitrary order k-means leaves).
3. Speed. Encode and decode images per second for PQ and RQ (s = 4, M = 8, K = 256, RQ beam 1), batch 256
   of 32 px and batch 8 of 256 px random crops of the scored images, median of ``--repeats`` timed runs
   after a warm-up, one thread; references: one Conv2d(3 -> 3, 3x3, padding 1) and one Conv2d(3 -> 64, 3x3,
   padding 1) forward pass of the same batch (inference mode).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/codec_table.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch / faiss load their thread pools

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from dimdiff.bench.environment import environment_record, machine_summary  # noqa: E402
from dimdiff.codec_tool import shuffled_codec  # noqa: E402
from dimdiff.codecs import OPQOptions, PQOptions, QuantizedCodec, RQOptions, VQOptions  # noqa: E402
from dimdiff.metrics import psnr, ssim  # noqa: E402

SCORED = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle")
TRAINING = ("immunohistochemistry", "hubble_deep_field", "retina", "colorwheel", "logo")
KINDS = {"vq": VQOptions, "pq": PQOptions, "opq": OPQOptions, "rq": RQOptions}
# ratio label -> kind -> (s, M, K)
SETTINGS = {
    "1:64": {"vq": (4, 1, 64), "pq": (8, 3, 256), "opq": (8, 3, 256), "rq": (8, 3, 256)},
    "1:32": {"vq": (4, 1, 4096), "pq": (8, 6, 256), "opq": (8, 6, 256), "rq": (8, 6, 256)},
    "1:24": {"vq": (2, 1, 16), "pq": (8, 8, 256), "opq": (8, 8, 256), "rq": (8, 8, 256)},
}
SPEED = {"pq": (4, 8, 256), "rq": (4, 8, 256)}
MULTIPLE = 8  # scored images are cropped to a multiple of every s used


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/codec_table")
    p.add_argument("--crops", type=int, default=200, help="random training crops, taken in turn from each image")
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--iterations", type=int, default=20, help="k-means iterations per codebook")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per speed measurement (median)")
    p.add_argument("--kinds", default="vq,pq,opq,rq")
    p.add_argument("--ratios", default="1:64,1:32,1:24")
    p.add_argument("--loo-ratios", default="1:32", help="ratios of the leave-one-out check ('' for none)")
    p.add_argument("--loo-crops", type=int, default=100, help="random training crops per leave-one-out fit")
    p.add_argument("--no-speed", action="store_true")
    return p.parse_args()


def to_unit(a: np.ndarray) -> Tensor:
    """uint8 (H, W, >= 3) -> float32 (3, H, W) in [-1, 1] (extra channels such as alpha dropped)."""
    return torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1).float() / 127.5 - 1.0


def load(name: str) -> np.ndarray:
    image = getattr(skimage.data, name)()
    return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)


def scored_images() -> dict[str, Tensor]:
    out = {}
    for name in SCORED:
        x = to_unit(load(name))
        h, w = (x.shape[1] // MULTIPLE) * MULTIPLE, (x.shape[2] // MULTIPLE) * MULTIPLE
        top, left = (x.shape[1] - h) // 2, (x.shape[2] - w) // 2
        out[name] = x[:, top : top + h, left : left + w].contiguous()
    return out


def training_crops(count: int, size: int, seed: int, images: list[Tensor] | None = None) -> list[Tensor]:
    images = images if images is not None else [to_unit(load(name)) for name in TRAINING]
    gen = torch.Generator().manual_seed(seed)
    crops = []
    for i in range(count):
        x = images[i % len(images)]
        top = int(torch.randint(0, x.shape[1] - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, x.shape[2] - size + 1, (1,), generator=gen))
        crops.append(x[:, top : top + size, left : left + size].contiguous())
    return crops


def fit(kind: str, setting: tuple[int, int, int], crops: list[Tensor], args: argparse.Namespace,
        log: Callable[[str], None]) -> tuple[QuantizedCodec, float]:  # fmt: skip
    s, m, k = setting
    options = KINDS[kind](patch_size=s, num_codebooks=m, codebook_size=k, seed=args.seed,
                          iterations=args.iterations, fit_images=len(crops))  # fmt: skip
    start = time.perf_counter()
    codec = options.build().fit(crops, progress=lambda msg: log(f"    {msg}"))
    return codec, time.perf_counter() - start


def score(codec: QuantizedCodec, images: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    out = {}
    for name, x in images.items():
        x = x[None]
        y = codec.images(codec.codes(x))
        out[name] = {"psnr": float(psnr(x, y)[0]), "ssim": float(ssim(x, y)[0])}
    return out


def neighbour_distance(codec: QuantizedCodec) -> float:
    books = codec.quantizer.codebooks.double()
    return float((books[:, 1:] - books[:, :-1]).norm(dim=-1).mean())


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_crops(images: dict[str, Tensor], count: int, size: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    pool = list(images.values())
    out = []
    for i in range(count):
        x = pool[i % len(pool)]
        top = int(torch.randint(0, x.shape[1] - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, x.shape[2] - size + 1, (1,), generator=gen))
        out.append(x[:, top : top + size, left : left + size])
    return torch.stack(out).contiguous()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "OMP_NUM_THREADS=1 .venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv)
    start_all = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start_all:7.1f} s] {msg}", flush=True)

    images = scored_images()
    crops = training_crops(args.crops, args.crop_size, args.seed)
    log(f"scored: {', '.join(f'{n} {tuple(x.shape[1:])}' for n, x in images.items())}; training: {len(crops)} "
        f"crops of {args.crop_size} px from {', '.join(TRAINING)}")  # fmt: skip
    kinds = args.kinds.split(",")
    ratios = args.ratios.split(",")

    # 1. compression table (and the fitted 1:32 codecs for 2.)
    table: list[dict[str, Any]] = []
    at_32: dict[str, QuantizedCodec] = {}
    with torch.inference_mode():
        for ratio in ratios:
            for kind in kinds:
                setting = SETTINGS[ratio][kind]
                log(f"{ratio} {kind} (s, M, K) = {setting}")
                codec, seconds = fit(kind, setting, crops, args, log)
                per_image = score(codec, images)
                row = {
                    "ratio_label": ratio, "kind": kind, "patch_size": setting[0], "num_codebooks": setting[1],
                    "codebook_size": setting[2], "bits_per_pixel": codec.bits_per_pixel,
                    "compression_ratio": codec.compression_ratio(3), "fit_seconds": seconds,
                    "psnr": statistics.fmean(v["psnr"] for v in per_image.values()),
                    "ssim": statistics.fmean(v["ssim"] for v in per_image.values()), "per_image": per_image,
                }  # fmt: skip
                table.append(row)
                log(f"  PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}, 1:{row['compression_ratio']:.1f}, "
                    f"fit {seconds:.1f} s")  # fmt: skip
                if ratio == "1:32":
                    at_32[kind] = codec

        # 1b. leave-one-out: fitted on crops of the other scored photographs
        loo = []
        for ratio in filter(None, args.loo_ratios.split(",")):
            for kind in kinds:
                setting = SETTINGS[ratio][kind]
                per_image, seconds = {}, []
                for name, x in images.items():
                    others = [y for n, y in images.items() if n != name]
                    fold = training_crops(args.loo_crops, args.crop_size, args.seed, others)
                    log(f"leave-one-out {ratio} {kind} {setting}, scoring {name}")
                    codec, t = fit(kind, setting, fold, args, log)
                    per_image |= score(codec, {name: x})
                    seconds.append(t)
                loo.append({
                    "ratio_label": ratio, "kind": kind, "patch_size": setting[0], "num_codebooks": setting[1],
                    "codebook_size": setting[2], "compression_ratio": codec.compression_ratio(3),
                    "fit_seconds_mean": statistics.fmean(seconds),
                    "psnr": statistics.fmean(v["psnr"] for v in per_image.values()),
                    "ssim": statistics.fmean(v["ssim"] for v in per_image.values()), "per_image": per_image,
                })  # fmt: skip
                log(f"  leave-one-out PSNR {loo[-1]['psnr']:.2f} dB, SSIM {loo[-1]['ssim']:.4f}")

        # 2. ordering at 1:32
        ordering = []
        for kind, codec in at_32.items():
            shuffled = shuffled_codec(codec, seed=args.seed)
            sorted_err = statistics.fmean(codec.index_error_mse(x[None]) for x in images.values())
            shuffled_err = statistics.fmean(shuffled.index_error_mse(x[None]) for x in images.values())
            recon = statistics.fmean(float((codec.images(codec.codes(x[None])) - x[None]).double().pow(2).mean())
                                     for x in images.values())  # fmt: skip
            ordering.append({
                "kind": kind, "setting": list(SETTINGS["1:32"][kind]),
                "neighbour_distance_sorted": neighbour_distance(codec),
                "neighbour_distance_shuffled": neighbour_distance(shuffled),
                "index_error_mse_sorted": sorted_err, "index_error_mse_shuffled": shuffled_err,
                "reconstruction_mse": recon,
            })  # fmt: skip
            log(f"ordering {kind}: {ordering[-1]}")

        # 3. speed
        speed = []
        if not args.no_speed:
            batches = {32: random_crops(images, 256, 32, args.seed), 256: random_crops(images, 8, 256, args.seed)}
            convs = {"conv3x3 3->3": nn.Conv2d(3, 3, 3, padding=1), "conv3x3 3->64": nn.Conv2d(3, 64, 3, padding=1)}
            for kind, setting in SPEED.items():
                codec, seconds = fit(kind, setting, crops, args, log)
                for size, x in batches.items():
                    z = codec.encode(x)
                    assert torch.equal(codec.decode(z), codec.images(codec.codes(x)))
                    enc = median_seconds(lambda codec=codec, x=x: codec.encode(x), args.repeats)
                    dec = median_seconds(lambda codec=codec, z=z: codec.decode(z), args.repeats)
                    speed.append({"what": f"{kind} (s, M, K) = {setting}", "resolution": size, "batch": len(x),
                                  "encode_images_per_s": len(x) / enc, "decode_images_per_s": len(x) / dec,
                                  "fit_seconds": seconds})  # fmt: skip
                    log(f"speed {speed[-1]}")
            for name, conv in convs.items():
                for size, x in batches.items():
                    t = median_seconds(lambda conv=conv, x=x: conv(x), args.repeats)
                    speed.append({"what": name, "resolution": size, "batch": len(x), "images_per_s": len(x) / t})
                    log(f"speed {speed[-1]}")

    record = environment_record({"fit_and_crops": args.seed})
    record["command"] = command
    record["versions"] |= {"faiss": faiss.__version__, "scikit-image": importlib.metadata.version("scikit-image")}
    record["machine"]["faiss_threads"] = faiss.omp_get_max_threads()
    record["total_seconds"] = time.perf_counter() - start_all
    result = {
        "environment": record,
        "settings": {"scored": {n: list(x.shape) for n, x in images.items()}, "training_images": list(TRAINING),
                     "crops": args.crops, "crop_size": args.crop_size, "loo_crops": args.loo_crops,
                     "iterations": args.iterations,
                     "ratio_settings": SETTINGS, "speed_settings": SPEED, "repeats": args.repeats},
        "table": table, "leave_one_out": loo, "ordering": ordering, "speed": speed,
    }  # fmt: skip
    (out / "codec_table.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "codec_table.md").write_text(markdown(result, images))
    log(f"wrote {out / 'codec_table.md'} and {out / 'codec_table.json'}")


def ordering_lines(rows_: list[dict[str, Any]]) -> list[str]:
    lines = []
    for ratio in dict.fromkeys(r["ratio_label"] for r in rows_):
        rows = {r["kind"]: r["psnr"] for r in rows_ if r["ratio_label"] == ratio}
        order = [k for k in ("vq", "pq", "opq", "rq") if k in rows]
        holds = all(rows[a] < rows[b] for a, b in zip(order, order[1:], strict=False))
        ranked = " < ".join(f"{k.upper()} {rows[k]:.2f}" for k in sorted(rows, key=rows.get))
        lines.append(f"- {ratio}: {'holds' if holds else 'does not hold'} ({ranked})")
    return lines


def markdown(result: dict[str, Any], images: dict[str, Tensor]) -> str:
    env, settings = result["environment"], result["settings"]
    lines = [
        f"    {env['command']}",
        "",
        f"Quantized patch codecs on {len(images)} scikit-image colour photographs "
        f"({', '.join(f'{n} {x.shape[1]}x{x.shape[2]}' for n, x in images.items())}; stereo_motorcycle: left image; "
        f"centre crops to a multiple of {MULTIPLE} px), fitted on {settings['crops']} random "
        f"{settings['crop_size']} px crops of other bundled colour images ({', '.join(settings['training_images'])}), "
        f"k-means {settings['iterations']} iterations, seed {env['seeds']['fit_and_crops']}, sorted codebooks. "
        f"{machine_summary(env)}, faiss {env['versions']['faiss']} ({env['machine']['faiss_threads']} thread), "
        f"scikit-image {env['versions']['scikit-image']}; load average at the end "
        f"{', '.join(f'{v:.2f}' for v in env['machine']['load_average'] or [])}; git {env['git_commit']}.",
        "",
        "## 1. Compression: PSNR / SSIM (mean over the images), ratio = 24 s^2 / (M log2 K) against 24-bit RGB",
        "",
        "| ratio | codec | s | M | K | bits/pixel | ratio (exact) | PSNR (dB) | SSIM | fit (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["table"]:
        lines.append(f"| {r['ratio_label']} | {r['kind'].upper()} | {r['patch_size']} | {r['num_codebooks']} | "
                     f"{r['codebook_size']} | {r['bits_per_pixel']:.3f} | 1:{r['compression_ratio']:.1f} | "
                     f"{r['psnr']:.2f} | {r['ssim']:.4f} | {r['fit_seconds']:.1f} |")  # fmt: skip
    lines += ["", "PSNR (dB) per image:", ""]
    names = list(images)
    lines += [f"| ratio | codec | {' | '.join(names)} |", "|---|---|" + "---:|" * len(names)]
    for r in result["table"]:
        lines.append(f"| {r['ratio_label']} | {r['kind'].upper()} | "
                     + " | ".join(f"{r['per_image'][n]['psnr']:.2f}" for n in names) + " |")  # fmt: skip
    lines += ["", "PSNR ordering VQ < PQ < OPQ < RQ per ratio:", "", *ordering_lines(result["table"])]
    if result["leave_one_out"]:
        lines += [
            "",
            f"## 1b. Leave-one-out: each photograph scored by codecs fitted on {settings['loo_crops']} random "
            f"{settings['crop_size']} px crops of the other four photographs",
            "",
            f"| ratio | codec | s | M | K | PSNR (dB) | SSIM | fit (s, mean of 5) | {' | '.join(names)} |",
            "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(names),
        ]
        for r in result["leave_one_out"]:
            lines.append(f"| {r['ratio_label']} | {r['kind'].upper()} | {r['patch_size']} | {r['num_codebooks']} | "
                         f"{r['codebook_size']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['fit_seconds_mean']:.1f} | "
                         + " | ".join(f"{r['per_image'][n]['psnr']:.2f}" for n in names) + " |")  # fmt: skip
        lines += ["", "PSNR ordering VQ < PQ < OPQ < RQ (leave-one-out):", "",
                  *ordering_lines(result["leave_one_out"])]  # fmt: skip
    lines += [
        "",
        "## 2. Ordering at the 1:32 settings: sorted (pseudo-ordinal) against random word order",
        "",
        "Neighbour distance: mean ||C[k+1] - C[k]|| over codebooks and k. Index-error MSE: image MSE when every "
        "code of one codebook moves by one index (mean over codebooks and the scored images), beside the "
        "codec's own reconstruction MSE.",
        "",
        "| codec | s, M, K | neighbour dist. shuffled | sorted | ratio | index-error MSE shuffled | sorted | ratio "
        "| reconstruction MSE |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in result["ordering"]:
        lines.append(f"| {o['kind'].upper()} | {', '.join(map(str, o['setting']))} | "
                     f"{o['neighbour_distance_shuffled']:.3f} | {o['neighbour_distance_sorted']:.3f} | "
                     f"{o['neighbour_distance_shuffled'] / o['neighbour_distance_sorted']:.2f}x | "
                     f"{o['index_error_mse_shuffled']:.5f} | {o['index_error_mse_sorted']:.5f} | "
                     f"{o['index_error_mse_shuffled'] / o['index_error_mse_sorted']:.2f}x | "
                     f"{o['reconstruction_mse']:.5f} |")  # fmt: skip
    if result["speed"]:
        lines += [
            "",
            f"## 3. Speed, images per second (one thread, median of {settings['repeats']} runs after a warm-up; "
            "random crops of the scored images). The machine was shared with other jobs (load average "
            f"{env['machine']['load_average'][0]:.1f} on {env['machine']['cpu_count']} cores): rates of repeated "
            "runs differed by up to 2x, so compare rows of one run only, not across runs.",
            "",
            "| what | resolution | batch | encode (img/s) | decode (img/s) |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in result["speed"]:
            if "images_per_s" in s:
                lines.append(f"| {s['what']} (forward, reference) | {s['resolution']} | {s['batch']} | "
                             f"{s['images_per_s']:.0f} | |")  # fmt: skip
            else:
                lines.append(f"| {s['what']} | {s['resolution']} | {s['batch']} | {s['encode_images_per_s']:.0f} | "
                             f"{s['decode_images_per_s']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
