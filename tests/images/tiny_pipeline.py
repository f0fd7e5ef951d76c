"""A tiny random-weight Stable Diffusion pipeline, built in code (nothing downloaded).

Same classes and data flow as a real SD1.5 checkpoint (CLIP text encoder with the real
CLIP tokenizer derived from the shipped BPE, UNet2DConditionModel with cross-attention,
AutoencoderKL), with a few channels per layer. The VAE keeps SD's 8x down-sampling (four
blocks), so a requested 320x256 image is a 40x32 latent: the output has the requested
size while the CPU work stays small.
"""

from __future__ import annotations

from pathlib import Path

from minitoolai.images.backends.clip_tokenizer import write_clip_tokenizer


def build_tiny_pipeline(tmp: Path):
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(4, 4, 4, 4), norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=1, max_position_embeddings=77, projection_dim=16,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp / "clip-tokenizer"))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def save_tiny_pipeline(folder: Path) -> Path:
    """The tiny pipeline saved as a diffusers folder (a model path the backend loads)."""
    build_tiny_pipeline(folder.parent).save_pretrained(folder, safe_serialization=True)
    return folder
