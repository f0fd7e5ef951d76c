"""The diffusers backend: Stable Diffusion 1.5 / SDXL checkpoints run in this process.

A model's `path` is a single-file checkpoint (.safetensors / .ckpt, loaded with
`from_single_file` and the configs this package ships, so nothing is downloaded) or a
diffusers folder (`from_pretrained`, local files only). On a GPU: fp16 weights and PyTorch's
scaled-dot-product attention. Pipelines stay loaded (the `max_loaded_pipelines` most
recently used). Generation runs in a thread, one batch at a time per process: one GPU
does one batch best, and the event loop stays free for HTTP meanwhile.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import struct
import threading
from collections import OrderedDict
from pathlib import Path

from minitoolai.images.backends.clip_tokenizer import write_clip_tokenizer
from minitoolai.images.backends.schedulers import build_scheduler
from minitoolai.images.queue import ClaimedJob

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CONFIG_VERSION = "1"  # bump when the shipped configs change, to rebuild the cached folders
SDXL_KEY_PREFIX = "conditioner.embedders.1."


def detect_architecture(path: Path) -> str:
    """sdxl when a .safetensors checkpoint has SDXL's second text encoder, else sd15."""
    if path.suffix != ".safetensors":
        return "sd15"
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    return "sdxl" if any(k.startswith(SDXL_KEY_PREFIX) for k in header) else "sd15"


def config_folder(cache_dir: Path, architecture: str) -> Path:
    """The shipped configs plus derived CLIP tokenizers, as a diffusers folder on disk."""
    folder = cache_dir / f"{architecture}-v{CONFIG_VERSION}"
    if (folder / ".complete").exists():
        return folder
    staging = cache_dir / f".{architecture}-staging-{threading.get_ident()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(CONFIGS / architecture, staging)
    write_clip_tokenizer(staging / "tokenizer")
    if architecture == "sdxl":
        write_clip_tokenizer(staging / "tokenizer_2", pad_token="!")
    (staging / ".complete").write_text("ok\n")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class DiffusersBackend:
    name = "diffusers"

    def __init__(self, settings) -> None:
        self.settings = settings  # the whole Settings: images section + data_dir
        self.options = settings.images.diffusers
        self.max_batch = self.options.max_batch
        self.cache_dir = Path(settings.data_dir) / "diffusers-configs"
        self._pipes: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self._device = None

    def is_available(self, model: str) -> bool:
        cfg = self.settings.images.models.get(model)
        return bool(cfg and cfg.enabled and cfg.path and cfg.path.exists())

    # ---- device and loading ----
    def device_and_dtype(self):
        import torch

        device = self.options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.options.dtype
        if dtype == "auto":
            dtype = "float16" if device.startswith("cuda") else "float32"
        return device, getattr(torch, dtype)

    def _load(self, model: str):
        import diffusers
        from diffusers.models.attention_processor import AttnProcessor2_0

        cfg = self.settings.images.models[model]
        device, dtype = self.device_and_dtype()
        path = Path(cfg.path)
        if path.is_dir():
            pipe = diffusers.DiffusionPipeline.from_pretrained(
                path, local_files_only=True, dtype=dtype)
        else:
            arch = cfg.architecture if cfg.architecture != "auto" else detect_architecture(path)
            cls = (diffusers.StableDiffusionXLPipeline if arch == "sdxl"
                   else diffusers.StableDiffusionPipeline)
            extra = {} if arch == "sdxl" else {"safety_checker": None,
                                               "requires_safety_checker": False}
            pipe = cls.from_single_file(
                str(path), config=str(config_folder(self.cache_dir, arch)),
                local_files_only=True, torch_dtype=dtype, **extra)
        if getattr(pipe, "safety_checker", None) is not None:
            pipe.safety_checker = None  # the operator's policy, not a per-image model call
        pipe.set_progress_bar_config(disable=True)
        pipe.unet.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA kernels
        if self.options.attention_slicing:
            pipe.enable_attention_slicing()
        pipe.to(device)
        log.info("loaded image model %s from %s on %s (%s)", model, path, device, dtype)
        return pipe

    def pipeline(self, model: str):
        """The loaded pipeline for `model` (loading it, and unloading the least recently
        used beyond max_loaded_pipelines). Call with the lock held."""
        if model in self._pipes:
            self._pipes.move_to_end(model)
            return self._pipes[model]
        while len(self._pipes) >= self.options.max_loaded_pipelines:
            _, old = self._pipes.popitem(last=False)
            del old
            self._empty_cache()
        self._pipes[model] = self._load(model)
        return self._pipes[model]

    def _empty_cache(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ---- generation ----
    def generate_sync(self, jobs: list[ClaimedJob]) -> list[bytes]:
        import torch

        first = jobs[0]
        cfg = self.settings.images.models[first.model]
        with self._lock:
            pipe = self.pipeline(first.model)
            scheduler = build_scheduler(first.scheduler, pipe.scheduler.config,
                                        cfg.timestep_spacing)
            if hasattr(scheduler, "noise_sampler_seed"):
                # DPM++ SDE draws its Brownian noise from its own seed, not the generator:
                # give it one seed per image, so a job's seed means the same picture always
                scheduler.noise_sampler_seed = [job.seed for job in jobs]
            pipe.scheduler = scheduler
            # one generator per image: each job's seed gives the same image alone or batched
            generators = [torch.Generator(device="cpu").manual_seed(job.seed) for job in jobs]
            negatives = [job.negative_prompt for job in jobs]
            with torch.inference_mode():
                result = pipe(
                    prompt=[job.prompt for job in jobs],
                    negative_prompt=negatives if any(negatives) else None,
                    num_inference_steps=first.steps, guidance_scale=first.cfg_scale,
                    width=first.width, height=first.height, generator=generators,
                    output_type="pil")
        return [png_bytes(image) for image in result.images]

    async def generate(self, jobs: list[ClaimedJob]) -> list[bytes]:
        return await asyncio.to_thread(self.generate_sync, jobs)

    async def close(self) -> None:
        with self._lock:
            self._pipes.clear()
        self._empty_cache()
