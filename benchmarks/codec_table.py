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
3. Speed. Encode and decode images per second for PQ and RQ (s = 4, M = 8, K = 256, RQ beam 1) on batch
   256 of 32 px and batch 8 of 256 px random crops of the scored images, one thread, against faiss on the
   same codebooks in the same run (faiss.ProductQuantizer / faiss.ResidualQuantizer with max_beam_size 1,
   codebooks copied in). Whole image: dimdiff ``codec.encode(x)`` (patching, search, code grid, codes mapped
   to [-1, 1]) and ``codec.decode(z)`` (codes back from [-1, 1] with its checks, look-up, unpatching, clamp)
   against to_patches + ``compute_codes`` (ending at faiss's (n, M) uint8 codes) and ``decode`` +
   from_patches (ending at a contiguous (B, 3, H, W) tensor, not clamped); patching and unpatching are the
   same torch functions on both sides. Search only: ``codec.quantizer.encode`` / ``decode`` against
   ``compute_codes`` / ``decode`` on the same (n, D) patch vectors. Median of ``--repeats`` timed runs after
   one warm-up run of each; in every repeat the eight variants run in turn, in a rotating order. Before
   timing: faiss's decode of dimdiff's codes must equal dimdiff's reconstruction (allclose, whole images),
   and the two encoders' codes must agree except at float32 near-ties (asserted: under 1 % of the patches,
   and there the squared distances to the two words differ by under 1e-4).
   ``--only-speed`` fits only the two speed codecs (with the fit settings recorded in the existing
   codec_table.json), replaces the speed part of that JSON and re-renders codec_table.md from it.

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
from torch import Tensor  # noqa: E402

from dimdiff.bench.environment import environment_record, machine_summary  # noqa: E402
from dimdiff.codec_tool import shuffled_codec  # noqa: E402
from dimdiff.codecs import OPQOptions, PQOptions, QuantizedCodec, RQOptions, VQOptions  # noqa: E402
from dimdiff.codecs.quantized import from_patches, to_patches  # noqa: E402
from dimdiff.codecs.quantizer import Quantizer, Structure  # noqa: E402
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
SPEED_BATCHES = {32: 256, 256: 8}  # resolution (px) -> images per batch
TIE_GAP = 1e-4  # encoders may disagree only where the squared distances to their two words differ by less
TIE_FRACTION = 0.01  # ... and on fewer than this fraction of the patches
MULTIPLE = 8  # scored images are cropped to a multiple of every s used


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/codec_table")
    p.add_argument("--crops", type=int, default=200, help="random training crops, taken in turn from each image")
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--iterations", type=int, default=20, help="k-means iterations per codebook")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=9, help="timed runs per speed measurement (median)")
    p.add_argument("--kinds", default="vq,pq,opq,rq")
    p.add_argument("--ratios", default="1:64,1:32,1:24")
    p.add_argument("--loo-ratios", default="1:32", help="ratios of the leave-one-out check ('' for none)")
    p.add_argument("--loo-crops", type=int, default=100, help="random training crops per leave-one-out fit")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--only-speed", action="store_true", help="measure only the speed (section 3): replace it in "
                   "the existing codec_table.json and re-render codec_table.md")  # fmt: skip
    args = p.parse_args()
    if args.no_speed and args.only_speed:
        p.error("--no-speed and --only-speed exclude each other")
    return args


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


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of ``repeats`` timed calls of every function, after one warm-up call of each; each repeat calls
    them all in turn, the order rotating by one per repeat, so drifting machine load hits them alike."""
    names = list(fns)
    for name in names:
        fns[name]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


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


def faiss_quantizer(quantizer: Quantizer) -> Any:
    """faiss.ProductQuantizer / faiss.ResidualQuantizer (greedy, beam 1) holding the quantizer's codebooks."""
    m, k, _ = quantizer.codebooks.shape
    bits = k.bit_length() - 1
    books = quantizer.codebooks.float().contiguous().numpy().ravel()
    if quantizer.rotation is not None or quantizer.beam_size != 1:
        raise ValueError("expected an unrotated product quantizer or a greedy (beam 1) residual one")
    if quantizer.structure is Structure.PRODUCT:
        fq = faiss.ProductQuantizer(quantizer.dim, m, bits)
        faiss.copy_array_to_vector(books, fq.centroids)
    else:
        fq = faiss.ResidualQuantizer(quantizer.dim, m, bits)
        faiss.copy_array_to_vector(books, fq.codebooks)
        fq.max_beam_size = 1
        fq.is_trained = True
    return fq


def tie_gaps(quantizer: Quantizer, v: Tensor, ours: Tensor, theirs: Tensor) -> Tensor:
    """Where two encoders' codes (n, M) differ: ||r - C_m[theirs]||^2 - ||r - C_m[ours]||^2 in float64, r the
    sub-vector (product) or the residual before the first stage where they differ (residual); one per
    differing code (product) or differing vector (residual)."""
    books, v = quantizer.codebooks.double(), v.double()
    diff = ours != theirs
    if quantizer.structure is Structure.PRODUCT:
        i, m = diff.nonzero(as_tuple=True)
        u = v.reshape(len(v), *books.shape[::2])[i, m]  # (n', d)
        return (u - books[m, theirs[i, m]]).pow(2).sum(-1) - (u - books[m, ours[i, m]]).pow(2).sum(-1)
    gaps = []
    for i in diff.any(1).nonzero().flatten().tolist():
        m = int(diff[i].nonzero()[0])  # first differing stage; the stages before agree
        r = v[i] - books[torch.arange(m), ours[i, :m]].sum(0)
        gaps.append((r - books[m, theirs[i, m]]).pow(2).sum() - (r - books[m, ours[i, m]]).pow(2).sum())
    return torch.stack(gaps) if gaps else torch.zeros(0, dtype=torch.float64)


def speed(args: argparse.Namespace, images: dict[str, Tensor], crops: list[Tensor],
          log: Callable[[str], None]) -> list[dict[str, Any]]:  # fmt: skip
    """Section 3: images per second of dimdiff's codec and of faiss on the same codebooks (see the docstring)."""
    rows = []
    batches = {size: random_crops(images, count, size, args.seed) for size, count in SPEED_BATCHES.items()}
    for kind, setting in SPEED.items():
        codec, fit_seconds = fit(kind, setting, crops, args, log)
        q, s = codec.quantizer, setting[0]
        fq = faiss_quantizer(q)
        for size, x in batches.items():
            b, c, h, w = x.shape
            gh, gw, d = h // s, w // s, c * s * s

            def faiss_encode(x: Tensor = x, fq: Any = fq, d: int = d, s: int = s) -> np.ndarray:
                return fq.compute_codes(to_patches(x, s).reshape(-1, d).numpy())  # reshape copies: contiguous

            def faiss_decode(codes: np.ndarray, fq: Any = fq, shape: tuple = (b, gh, gw, d), c: int = c,
                             s: int = s) -> Tensor:  # fmt: skip
                return from_patches(torch.from_numpy(fq.decode(codes)).reshape(shape), c, s)  # contiguous copy

            # agreement before timing
            z = codec.encode(x)
            y = codec.codes(x)  # (B, M, gh, gw)
            y_rows = y.permute(0, 2, 3, 1).reshape(-1, q.num_codebooks)  # (n, M) in patch order
            ours_image = codec.decode(z)
            theirs_image = faiss_decode(y_rows.numpy().astype(np.uint8)).clamp(-1.0, 1.0)
            assert torch.allclose(ours_image, theirs_image, atol=1e-5), (ours_image - theirs_image).abs().max()
            v = to_patches(x, s).reshape(-1, d).contiguous()
            vn = v.numpy()
            theirs_codes = fq.compute_codes(vn)
            assert theirs_codes.shape == (len(v), q.num_codebooks)
            gaps = tie_gaps(q, v, y_rows, torch.from_numpy(theirs_codes.astype(np.int64)))
            differing = int((y_rows != torch.from_numpy(theirs_codes.astype(np.int64))).any(1).sum())
            max_gap = float(gaps.abs().max()) if len(gaps) else 0.0
            assert differing < TIE_FRACTION * len(v) and max_gap < TIE_GAP, (differing, max_gap)
            assert torch.equal(ours_image, codec.images(codec.codes(x)))

            our_codes = q.encode(v)
            times = interleaved_medians({
                "encode_dimdiff": lambda codec=codec, x=x: codec.encode(x),
                "encode_faiss": faiss_encode,
                "decode_dimdiff": lambda codec=codec, z=z: codec.decode(z),
                "decode_faiss": lambda codes=theirs_codes, f=faiss_decode: f(codes),
                "search_encode_dimdiff": lambda q=q, v=v: q.encode(v),
                "search_encode_faiss": lambda fq=fq, vn=vn: fq.compute_codes(vn),
                "search_decode_dimdiff": lambda q=q, y=our_codes: q.decode(y),
                "search_decode_faiss": lambda fq=fq, codes=theirs_codes: fq.decode(codes),
            }, args.repeats)  # fmt: skip
            rows.append({
                "kind": kind, "setting": list(setting), "resolution": size, "batch": b, "patches": len(v),
                "fit_seconds": fit_seconds, "differing_patches": differing, "max_tie_gap": max_gap,
                "faiss_nearer": int((gaps < 0).sum()), "dimdiff_nearer": int((gaps > 0).sum()),
                "images_per_s": {name: b / statistics.median(t) for name, t in times.items()}, "seconds": times,
            })  # fmt: skip
            rates = rows[-1]["images_per_s"]
            log(f"speed {kind} {size} px: " + ", ".join(f"{n} {r:.0f}" for n, r in rates.items())
                + f" img/s; {differing} of {len(v)} patches coded differently (max gap {max_gap:.2e})")  # fmt: skip
    return rows


def run_record(command: str, seeds: dict[str, int]) -> dict[str, Any]:
    record = environment_record(seeds)
    record["command"] = command
    record["versions"] |= {"faiss": faiss.__version__, "scikit-image": importlib.metadata.version("scikit-image")}
    record["machine"]["faiss_threads"] = faiss.omp_get_max_threads()
    return record


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

    if args.only_speed:
        result = json.loads((out / "codec_table.json").read_text())
        settings = result["settings"]
        # the speed codecs are fitted as the full run fitted its codecs
        args.crops, args.crop_size, args.iterations = settings["crops"], settings["crop_size"], settings["iterations"]
        args.seed = result["environment"]["seeds"]["fit_and_crops"]
        images = scored_images()
        crops = training_crops(args.crops, args.crop_size, args.seed)
        log(f"--only-speed: fitting with {args.crops} crops of {args.crop_size} px, {args.iterations} iterations, "
            f"seed {args.seed} (from {out / 'codec_table.json'})")  # fmt: skip
        with torch.inference_mode():
            result["speed"] = speed(args, images, crops, log)
        settings |= {"speed_settings": SPEED, "speed_batches": SPEED_BATCHES, "repeats": args.repeats}
        result["speed_environment"] = run_record(command, {"fit_and_crops": args.seed})
        result["speed_environment"]["total_seconds"] = time.perf_counter() - start_all
        write(out, result, log)
        return

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
        speed_rows = [] if args.no_speed else speed(args, images, crops, log)

    record = run_record(command, {"fit_and_crops": args.seed})
    record["total_seconds"] = time.perf_counter() - start_all
    result = {
        "environment": record,
        "settings": {"scored": {n: list(x.shape) for n, x in images.items()}, "training_images": list(TRAINING),
                     "crops": args.crops, "crop_size": args.crop_size, "loo_crops": args.loo_crops,
                     "iterations": args.iterations, "ratio_settings": SETTINGS, "speed_settings": SPEED,
                     "speed_batches": SPEED_BATCHES, "repeats": args.repeats},
        "table": table, "leave_one_out": loo, "ordering": ordering, "speed": speed_rows,
        "speed_environment": record,
    }  # fmt: skip
    write(out, result, log)


def write(out: Path, result: dict[str, Any], log: Callable[[str], None]) -> None:
    (out / "codec_table.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "codec_table.md").write_text(markdown(result))
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


def speed_lines(result: dict[str, Any]) -> list[str]:
    settings = result["settings"]
    env = result.get("speed_environment") or result["environment"]
    machine = env["machine"]
    load = ", ".join(f"{v:.2f}" for v in machine["load_average"] or [])
    lines = [
        "",
        "## 3. Speed: dimdiff against faiss on the same codebooks, images per second",
        "",
        f"    {env['command']}",
        "",
        f"{env['time_utc']}, git {env['git_commit']}; {machine_summary(env)}, faiss {env['versions']['faiss']} "
        f"({machine['faiss_threads']} thread); load average at the end {load} on {machine['cpu_count']} cores "
        "(the machine was shared with other jobs, so compare columns of one run, not rates across runs). Random "
        f"crops of the scored images; median of {settings['repeats']} timed runs after a warm-up, all eight "
        "variants of a row interleaved in every repeat. faiss: ProductQuantizer / ResidualQuantizer "
        "(max_beam_size 1) with dimdiff's codebooks copied in. ratio = dimdiff / faiss images per second "
        "(> 1: dimdiff faster).",
        "",
        "Whole image. dimdiff: `codec.encode(x)` (to_patches, nearest-word search, code grid, codes mapped to "
        "[-1, 1]) and `codec.decode(z)` (codes back from [-1, 1] with finiteness and range checks, look-up, "
        "from_patches, clamp). faiss: the same to_patches (incl. its copy to a contiguous (n, D) float32 array) + "
        "`compute_codes` (ending at (n, M) uint8 codes, no code grid) and `decode` + the same from_patches (ending "
        "at a contiguous (B, 3, H, W) tensor, no clamp).",
        "",
        "| codec (s, M, K) | px | batch | patches | encode dimdiff | encode faiss | ratio | decode dimdiff "
        "| decode faiss | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(r: dict[str, Any], prefix: str) -> str:
        ips = r["images_per_s"]
        cells = [f"{r['kind'].upper()} ({', '.join(map(str, r['setting']))})", str(r["resolution"]), str(r["batch"]),
                 str(r["patches"])]  # fmt: skip
        for op in ("encode", "decode"):
            ours, theirs = ips[f"{prefix}{op}_dimdiff"], ips[f"{prefix}{op}_faiss"]
            cells += [f"{ours:,.0f}", f"{theirs:,.0f}", f"{ours / theirs:.2f}"]
        return "| " + " | ".join(cells) + " |"

    lines += [row(r, "") for r in result["speed"]]
    lines += [
        "",
        "Search only, on the same (n, D) patch vectors (no patching, no code mapping, no clamp): "
        "`codec.quantizer.encode(v)` / `.decode(y)` against `compute_codes(v)` / `decode(codes)`; "
        "still images per second.",
        "",
        "| codec (s, M, K) | px | batch | patches | encode dimdiff | encode faiss | ratio | decode dimdiff "
        "| decode faiss | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(row(r, "search_") for r in result["speed"]),
        "",
        "Agreement, checked before timing: faiss's decode of dimdiff's codes gives dimdiff's images (allclose, "
        "atol 1e-5). The encoders' codes agree except at float32 near-ties (asserted: fewer than "
        f"{TIE_FRACTION:.0%} of the patches, squared-distance gap under {TIE_GAP:g}): "
        + "; ".join(f"{r['kind'].upper()} {r['resolution']} px {r['differing_patches']} of {r['patches']} patches "
                    f"(largest gap {r['max_tie_gap']:.1e})" for r in result["speed"])
        + ". At the differing codes (first differing stage for RQ), the word that is nearer in float64 is faiss's in "
        + ", ".join(f"{r['faiss_nearer']} / {r['faiss_nearer'] + r['dimdiff_nearer']}" for r in result["speed"])
        + " cases (same order).",
    ]  # fmt: skip
    return lines


def markdown(result: dict[str, Any]) -> str:
    """codec_table.md, all sections rendered from the JSON result alone."""
    env, settings = result["environment"], result["settings"]
    images = settings["scored"]  # name -> [C, H, W]
    lines = [
        f"    {env['command']}",
        "",
        f"Quantized patch codecs on {len(images)} scikit-image colour photographs "
        f"({', '.join(f'{n} {x[1]}x{x[2]}' for n, x in images.items())}; stereo_motorcycle: left image; "
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
        lines += speed_lines(result)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
