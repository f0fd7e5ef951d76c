"""Seconds per image on a GPU: an SDXL-architecture pipeline with RANDOM weights (same
shapes as SDXL base, so the same cost per step as a real checkpoint), built from the configs
the package ships, fp16 + SDPA, through the diffusers backend's own generate path.

Times 1152x768 at 4 steps with the seed's default scheduler (DPM++ SDE), alone and in
batches, after one warm-up run per batch size. Needs a CUDA GPU with about 16 GB free.

    python bench/images_gpu.py                  # batch sizes 1 and 4
    python bench/images_gpu.py --batch 1 2 4 8 --steps 4 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from minitoolai.config import load_settings
from minitoolai.images.backends.diffusers_backend import CONFIGS, DiffusersBackend, config_folder
from minitoolai.images.queue import ClaimedJob


def random_sdxl(cache: Path, dtype):
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    folder = config_folder(cache, "sdxl")
    with torch.device("cuda"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        te2 = CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    return StableDiffusionXLPipeline(
        vae=vae.to(dtype), text_encoder=te1.to(dtype), text_encoder_2=te2.to(dtype),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
        unet=unet.to(dtype), scheduler=EulerDiscreteScheduler.from_pretrained(
            CONFIGS / "sdxl" / "scheduler"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--width", type=int, default=1152)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--scheduler", default="DPM++ SDE")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: this benchmark measures GPU seconds per image")
    data = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    settings = load_settings({}, overrides={
        "data_dir": str(data), "images": {"diffusers": {"max_batch": max(args.batch)},
                                          "models": {"realvision": {"path": str(data)}}}})
    backend = DiffusersBackend(settings)
    pipe = random_sdxl(data / "configs", torch.float16)
    pipe.set_progress_bar_config(disable=True)
    backend._pipes["realvision"] = pipe  # the random pipeline stands in for a checkpoint
    print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; SDXL shapes,"
          f" random fp16 weights; {args.width}x{args.height}, {args.steps} steps,"
          f" {args.scheduler}")
    for batch in args.batch:
        jobs = [ClaimedJob(id=i, request_id=str(i), account_id=1, endpoint="bench",
                           model="realvision", prompt=f"a lighthouse at dusk {i}",
                           negative_prompt="blur", scheduler=args.scheduler, steps=args.steps,
                           cfg_scale=2.0, width=args.width, height=args.height, seed=i,
                           price=0, attempts=1, created_at=datetime.now(UTC))
                for i in range(batch)]
        backend.generate_sync(jobs)  # warm-up
        times = []
        for _ in range(args.repeats):
            torch.cuda.synchronize()
            started = time.perf_counter()
            backend.generate_sync(jobs)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        print(f"batch {batch}: {median:.3f} s per call, {median / batch:.3f} s per image"
              f" (median of {args.repeats}), peak memory"
              f" {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
