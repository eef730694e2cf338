"""A tiny, randomly initialised Stable Diffusion, built in code, for tests and benchmarks.

The same architecture as SD 1.x at toy scale (as in diffusers' fast tests): a two-level UNet with
cross-attention, a two-block VAE (latents at half the image side), a five-layer CLIP text encoder
and a byte-level CLIP tokenizer with no merges. Seeded, so every build gives the same weights.
Its images are noise-like, but every code path (loading, schedulers, batching, seeds) is real.

- `tiny_pipeline(kind="sd")`: the `StableDiffusionPipeline` (``kind="sdxl"``: a
  `StableDiffusionXLPipeline` with two text encoders and pooled, size-conditioned embeddings;
  ``kind="lcm"``: a `LatentConsistencyModelPipeline` whose UNet, like LCM-distilled ones, takes
  the guidance scale's embedding, ``time_cond_proj_dim``, with an `LCMScheduler`), float32 on
  the CPU.
- `save_tiny_pipeline(path, kind="sd")`: write it as a diffusers directory that
  `load_pipeline` accepts.
- `save_tiny_single_file(path)`: write it as one original-layout (LDM) ``.safetensors``
  checkpoint, loadable with ``config=`` a directory from `save_tiny_pipeline`.
- `save_tiny_lora(path)`: a random LoRA for the ``sd`` model's UNet and text encoder, as the
  one ``.safetensors`` file diffusers' ``save_lora_weights`` writes.
- `tiny_controlnet(kind="sd")`, `save_tiny_controlnet(path)`: a random ControlNet that fits
  the tiny ``sd`` (or ``sdxl``) UNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TINY_SEED",
    "save_tiny_controlnet",
    "save_tiny_lora",
    "save_tiny_pipeline",
    "save_tiny_single_file",
    "tiny_controlnet",
    "tiny_pipeline",
    "tiny_tokenizer",
]

TINY_SEED = 0
TEXT_HIDDEN = 32
MAX_TOKENS = 77
SDXL_TIME_DIM = 8  # SDXL embeds 6 numbers (original size, crop, target size) at this width
LCM_COND_DIM = 32  # width of the guidance embedding an LCM UNet adds to its time embedding
VAE_CHANNELS = {2: (32, 64), 8: (32, 32, 64, 64)}  # VAE scale factor: its blocks' widths
KINDS = ("sd", "sdxl", "lcm")


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of GPT-2/CLIP byte-level BPE, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[byte] for byte in range(256)]


def tiny_tokenizer() -> Any:
    """A CLIP tokenizer over single bytes: each symbol, each symbol ending a word, two specials."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    tokens = ["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols)]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)


def _text_config(tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=MAX_TOKENS,
        vocab_size=len(tokenizer),
        projection_dim=TEXT_HIDDEN,
    )


def _unet(kind: str) -> Any:
    from diffusers import UNet2DConditionModel

    blocks = {
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    }
    if kind == "lcm":
        return UNet2DConditionModel(**blocks, cross_attention_dim=TEXT_HIDDEN,
                                    time_cond_proj_dim=LCM_COND_DIM)
    if kind == "sd":
        return UNet2DConditionModel(**blocks, cross_attention_dim=TEXT_HIDDEN)
    return UNet2DConditionModel(
        **blocks,
        cross_attention_dim=2 * TEXT_HIDDEN,  # both text encoders' states, concatenated
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_DIM,
        projection_class_embeddings_input_dim=6 * SDXL_TIME_DIM + TEXT_HIDDEN,
    )


def _tiny_components(kind: str, vae_factor: int = 2) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDIMScheduler, LCMScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if kind not in KINDS:
        raise ValueError(f"kind: unknown tiny model {kind!r} (use {', '.join(KINDS)})")
    if vae_factor not in VAE_CHANNELS:
        raise ValueError(f"vae_factor: {vae_factor} (use {' or '.join(map(str, VAE_CHANNELS))})")
    channels = VAE_CHANNELS[vae_factor]
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        unet = _unet(kind)
        torch.manual_seed(TINY_SEED)
        vae = AutoencoderKL(
            block_out_channels=channels,
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(channels),
            up_block_types=("UpDecoderBlock2D",) * len(channels),
            latent_channels=4,
        )
        torch.manual_seed(TINY_SEED)
        text_encoder = CLIPTextModel(_text_config(tokenizer))
        text_encoder_2 = None
        if kind == "sdxl":
            torch.manual_seed(TINY_SEED + 1)
            text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    if kind == "lcm":
        scheduler = LCMScheduler.from_config(scheduler.config)
    components = {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
        "image_encoder": None,
        "feature_extractor": None,
    }
    if text_encoder_2 is not None:
        return {**components, "text_encoder_2": text_encoder_2.eval(), "tokenizer_2": tokenizer}
    return {**components, "safety_checker": None, "requires_safety_checker": False}


def tiny_pipeline(kind: str = "sd", vae_factor: int = 2) -> Any:
    """The tiny ``sd``, ``sdxl`` or ``lcm`` text-to-image pipeline (float32, CPU, progress bar
    off). ``vae_factor = 8`` gives a four-block VAE with Stable Diffusion's geometry (a 64 px
    window is 8x8 latents), for benchmarks that should weigh the UNet as SD does."""
    from diffusers import (
        LatentConsistencyModelPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    pipeline_class = {"sdxl": StableDiffusionXLPipeline,
                      "lcm": LatentConsistencyModelPipeline}.get(kind, StableDiffusionPipeline)
    pipe = pipeline_class(**_tiny_components(kind, vae_factor))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(path: Path | str, kind: str = "sd") -> Path:
    """Write a tiny pipeline as a diffusers directory (safetensors weights); returns the path."""
    path = Path(path)
    tiny_pipeline(kind).save_pretrained(path, safe_serialization=True)
    return path


def save_tiny_single_file(path: Path | str) -> Path:
    """Write the tiny pipeline as one original-layout ``.safetensors`` checkpoint; returns it.

    The layout is CompVis/LDM's (``model.diffusion_model.*``, ``first_stage_model.*``,
    ``cond_stage_model.transformer.*``), the one community checkpoints use, so loading it goes
    through diffusers' real single-file conversion.
    """
    from safetensors.torch import save_file

    pipe = tiny_pipeline()
    state = {}
    state.update(_ldm_unet(pipe.unet))
    state.update(_ldm_vae(pipe.vae))
    state.update(_ldm_clip(pipe.text_encoder))
    path = Path(path)
    save_file({key: value.contiguous() for key, value in state.items()}, path)
    return path


def save_tiny_lora(path: Path | str, *, seed: int = 1, cross_attention_dim: int = TEXT_HIDDEN
                   ) -> Path:
    """Write a random rank-4 LoRA over the attention projections of the tiny ``sd`` UNet and
    text encoder (peft's, weights from ``seed``, large enough to show); returns its path. Another
    ``cross_attention_dim`` makes it a LoRA for a UNet of another shape (another base model)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    components = _tiny_components("sd")
    unet = UNet2DConditionModel.from_config(components["unet"].config,
                                            cross_attention_dim=cross_attention_dim)
    layers = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, model, targets in (("unet", unet, ["to_q", "to_k", "to_v", "to_out.0"]),
                                     ("text_encoder", components["text_encoder"],
                                      ["q_proj", "k_proj", "v_proj", "out_proj"])):
            model = inject_adapter_in_model(
                LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                           target_modules=targets), model)
            for key, parameter in model.named_parameters():
                if "lora_B" in key:
                    torch.nn.init.normal_(parameter, std=0.5)
            state = get_peft_model_state_dict(model)
            layers[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(state)
    path = Path(path)
    StableDiffusionPipeline.save_lora_weights(path.parent, weight_name=path.name,
                                              safe_serialization=True, **layers)
    return path


def _rename(state: dict[str, torch.Tensor], prefix: str, pairs: list[tuple[str, str]]) -> dict:
    """Map diffusers keys to LDM keys: ``pairs`` of (diffusers prefix, LDM prefix)."""
    out = {}
    for key, value in state.items():
        for ours, theirs in pairs:
            if key.startswith(ours):
                out[prefix + theirs + key[len(ours) :]] = value
                break
        else:
            raise KeyError(f"no LDM name for {key}")
    return out


RESNET = [
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
]


def _ldm_unet(unet: Any) -> dict[str, torch.Tensor]:
    """The UNet's weights under LDM names (``input_blocks``, ``middle_block``, ...)."""
    config = unet.config
    per_down = config.layers_per_block
    levels = len(config.block_out_channels)
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1."),
    ]
    for i in range(2):
        pairs += [(f"mid_block.resnets.{i}.{a}", f"middle_block.{2 * i}.{b}") for a, b in RESNET]
    for level in range(levels):
        for j in range(per_down):
            block = 1 + level * (per_down + 1) + j
            pairs += [
                (f"down_blocks.{level}.resnets.{j}.{a}", f"input_blocks.{block}.0.{b}")
                for a, b in RESNET
            ]
            pairs.append((f"down_blocks.{level}.attentions.{j}.", f"input_blocks.{block}.1."))
        downsampler = (level + 1) * (per_down + 1)
        pairs.append(
            (f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{downsampler}.0.op.")
        )
        for j in range(per_down + 1):
            block = level * (per_down + 1) + j
            pairs += [
                (f"up_blocks.{level}.resnets.{j}.{a}", f"output_blocks.{block}.0.{b}")
                for a, b in RESNET
            ]
            pairs.append((f"up_blocks.{level}.attentions.{j}.", f"output_blocks.{block}.1."))
        upsampler = 2 if "CrossAttn" in config.up_block_types[level] else 1
        pairs.append((f"up_blocks.{level}.upsamplers.0.", f"output_blocks.{block}.{upsampler}."))
    return _rename(unet.state_dict(), "model.diffusion_model.", pairs)


VAE_RESNET = [("conv_shortcut.", "nin_shortcut.")]
VAE_ATTENTION = [
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
]


def _ldm_vae(vae: Any) -> dict[str, torch.Tensor]:
    """The VAE's weights under LDM names; attention projections become 1x1 convolutions."""
    levels = len(vae.config.block_out_channels)
    pairs: list[tuple[str, str]] = []
    for part in ("encoder", "decoder"):
        pairs += [
            (f"{part}.mid_block.attentions.0.{a}", f"{part}.mid.attn_1.{b}")
            for a, b in VAE_ATTENTION
        ]
        for i in range(2):
            pairs += [
                (f"{part}.mid_block.resnets.{i}.{a}", f"{part}.mid.block_{i + 1}.{b}")
                for a, b in VAE_RESNET
            ]
            pairs.append((f"{part}.mid_block.resnets.{i}.", f"{part}.mid.block_{i + 1}."))
        pairs += [(f"{part}.conv_norm_out.", f"{part}.norm_out.")]
    for level in range(levels):
        down, up = f"encoder.down_blocks.{level}.", f"decoder.up_blocks.{level}."
        pairs += [
            (f"{down}resnets.{j}.{a}", f"encoder.down.{level}.block.{j}.{b}")
            for j in range(3)
            for a, b in VAE_RESNET
        ]
        pairs += [
            (f"{down}resnets.", f"encoder.down.{level}.block."),
            (f"{down}downsamplers.0.", f"encoder.down.{level}.downsample."),
        ]
        ldm_level = levels - 1 - level
        pairs += [
            (f"{up}resnets.{j}.{a}", f"decoder.up.{ldm_level}.block.{j}.{b}")
            for j in range(3)
            for a, b in VAE_RESNET
        ]
        pairs += [
            (f"{up}resnets.", f"decoder.up.{ldm_level}.block."),
            (f"{up}upsamplers.0.", f"decoder.up.{ldm_level}.upsample."),
        ]
    pairs += [(name, name) for name in ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")]
    state = _rename(vae.state_dict(), "first_stage_model.", pairs)
    return {
        key: value[..., None, None]
        if ".attn_1." in key and key.endswith("weight") and value.ndim == 2
        else value
        for key, value in state.items()
    }


def _ldm_clip(text_encoder: Any) -> dict[str, torch.Tensor]:
    """The text encoder under ``cond_stage_model.transformer.text_model.*`` (SD 1.x layout)."""
    out = {}
    for key, value in text_encoder.state_dict().items():
        name = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + name] = value
    return out


def tiny_vision_model(projection_dim: int = TEXT_HIDDEN, seed: int = TINY_SEED) -> Any:
    """A tiny seeded ``CLIPVisionModelWithProjection`` (32 px images, 8 px patches: 16 patch
    tokens and a class token, width 32), float32, eval. Its default ``projection_dim`` matches
    the tiny text encoder's width, as ViT-L/14's matches SD 1.x's."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        layer_norm_eps=1e-5,
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPVisionModelWithProjection(config).eval()


INPAINT_CHANNELS = 9  # latents (4) + mask (1) + masked-image latents (4), as SD inpainting UNets


def tiny_inpaint_pipeline() -> Any:
    """The tiny ``sd`` model with a seeded 9-channel inpainting UNet, as a
    `StableDiffusionInpaintPipeline` (float32, CPU, progress bar off)."""
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    sd = _unet("sd")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        unet = UNet2DConditionModel.from_config(sd.config, in_channels=INPAINT_CHANNELS).eval()
    pipe = StableDiffusionInpaintPipeline(**{**_tiny_components("sd"), "unet": unet})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_inpaint_pipeline(path: Path | str) -> Path:
    """Write `tiny_inpaint_pipeline` as a diffusers directory; returns the path."""
    path = Path(path)
    tiny_inpaint_pipeline().save_pretrained(path, safe_serialization=True)
    return path


def tiny_controlnet(kind: str = "sd", *, seed: int = 2, cross_attention_dim: int | None = None
                    ) -> Any:
    """A ControlNet for the tiny ``sd`` or ``sdxl`` UNet (``ControlNetModel.from_unet``, its
    conditioning embedding halving once, as the tiny VAE does), float32, CPU. Its zero
    convolutions (the residuals' and the control image embedding's last), zero when trained
    from scratch, get random weights from ``seed`` so that
    its residuals show. Another ``cross_attention_dim`` makes one for another base model."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = _tiny_components(kind)["unet"]
    if cross_attention_dim is not None:
        unet = UNet2DConditionModel.from_config(unet.config,
                                                cross_attention_dim=cross_attention_dim)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for block in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                      controlnet.controlnet_cond_embedding.conv_out]:
            torch.nn.init.normal_(block.weight, std=0.2)
    return controlnet.eval()


def save_tiny_controlnet(path: Path | str, kind: str = "sd", **options: Any) -> Path:
    """Write `tiny_controlnet` as a diffusers folder (safetensors); returns the path."""
    path = Path(path)
    tiny_controlnet(kind, **options).save_pretrained(path, safe_serialization=True)
    return path
