"""Configuration of images: which backend serves each model, the queue, the workers, storage.

Environment: ``MINITOOLAI_IMAGES__<KEY>``; the model map as JSON, e.g.
``MINITOOLAI_IMAGES__MODELS='{"realvision": {"backend": "diffusers",
"path": "/models/realvision.safetensors"}}'``. See docs/images.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ImageModelSettings(BaseModel):
    """Where one of the seed's model names is served from."""

    model_config = ConfigDict(extra="forbid")

    # diffusers: in-process; a1111: an AUTOMATIC1111/Forge server; instant: the test and
    # benchmark backend that returns a plain image at once (generates nothing)
    backend: Literal["diffusers", "a1111", "instant"] = "diffusers"
    # diffusers: a single-file checkpoint (.safetensors/.ckpt) or a diffusers folder
    path: Path | None = None
    # diffusers single-file checkpoints: which shipped config to load them with
    architecture: Literal["auto", "sd15", "sdxl"] = "auto"
    # a1111: the checkpoint title sent as override_settings.sd_model_checkpoint
    checkpoint: str | None = None
    # few-step checkpoints (the seed's 4 steps, cfg 2) want trailing timestep spacing
    timestep_spacing: Literal["trailing", "leading", "linspace"] = "trailing"
    enabled: bool = True


class A1111Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None  # e.g. http://127.0.0.1:7860
    username: str | None = None  # --api-auth credentials, when the server asks for them
    password: str | None = None
    timeout_seconds: float = Field(600.0, gt=0)
    # jobs per claim, sent as concurrent requests: the txt2img API takes one prompt per call
    max_batch: int = Field(1, ge=1)
    # A1111 1.9+/Forge take `scheduler` separately ("Karras"); older ones want it in the name
    separate_scheduler: bool = True


class DiffusersSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = "auto"  # auto: cuda when torch sees a GPU, else cpu
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"  # auto: fp16 on GPU
    max_batch: int = Field(4, ge=1)
    max_loaded_pipelines: int = Field(1, ge=1)  # least recently used ones are unloaded
    attention_slicing: bool = False  # saves memory on small GPUs, costs speed


class S3Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: str | None = None
    prefix: str = "images/"
    endpoint_url: str | None = None  # S3-compatible stores: MinIO, R2, ...
    region: str | None = None
    access_key_id: str | None = None  # default: boto3's own chain (env, profile, role)
    secret_access_key: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"


class ImagesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ImageModelSettings] = Field(default_factory=dict)
    a1111: A1111Settings = Field(default_factory=A1111Settings)
    diffusers: DiffusersSettings = Field(default_factory=DiffusersSettings)

    # ---- queue and workers ----
    embedded_workers: int = Field(1, ge=0)  # worker loops inside `serve`; 0: none
    standalone_workers: int = Field(1, ge=1)  # worker loops in `minitoolai worker`
    poll_interval_seconds: float = Field(0.5, gt=0)  # idle workers look for jobs this often
    lease_seconds: float = Field(120.0, ge=1)  # renewed while the job runs
    max_attempts: int = Field(3, ge=1)  # runs of one job before it fails for good
    # on SIGTERM a worker takes no new job and lets the running batch finish this long; past
    # it the batch's jobs go back to the queue at once (not after their lease lapses)
    stop_drain_seconds: float = Field(30.0, ge=0)
    # `minitoolai worker` serves its own Prometheus metrics (job outcomes and durations are
    # counted where a job runs) on this port when set; on loopback unless told otherwise
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    max_queued: int = Field(10_000, ge=1)  # submits beyond this answer 503
    queue_timeout_seconds: int = Field(3 * 3600, ge=10)  # a job queued longer fails, refunded
    hold_ttl_seconds: int = Field(6 * 3600, ge=60)  # must outlive queue + every attempt
    openai_wait_seconds: float = Field(600.0, gt=0)  # /v1/images/generations waits this long
    openai_max_n: int = Field(4, ge=1)

    # ---- storage ----
    storage: Literal["local", "s3"] = "local"
    images_dir: Path | None = None  # default: <data_dir>/images
    s3: S3Settings = Field(default_factory=S3Settings)
    retention_hours: float = Field(24.0, gt=0)  # files are deleted this long after creation
    retention_sweep_seconds: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> ImagesSettings:
        needed = self.queue_timeout_seconds + self.max_attempts * self.lease_seconds
        if self.hold_ttl_seconds <= needed:
            raise ValueError(
                f"hold_ttl_seconds ({self.hold_ttl_seconds}) must exceed queue_timeout_seconds"
                f" + max_attempts * lease_seconds ({needed:.0f}) so that a job's hold outlives it"
            )
        if self.storage == "s3" and not self.s3.bucket:
            raise ValueError("storage = 's3' needs s3.bucket")
        return self
