"""The VideoVAE's training task (`task: video_vae`): the temporal decoder fine-tuned on video clips.

The model is a `VideoAutoencoderKL` built from the image VAE `video_vae.init` (or continued from a
VideoVAE folder). The encoder (and quant_conv) is frozen, so the latent space and every U-Net
trained on it stay valid; by default only the temporal attention layers train, so the base decoder
stays the image VAE's and `--decoder image` decodes exactly as before
(`video_vae.train_decoder: true` trains the whole decoder).

For a clip x (B, 3, F, H, W) at stream position p: latents z = E(x) (posterior mode, per frame).
With probability `generated_fraction` (seeded by p) the clip's latents are replaced by
"generated-like" latents: the scaled latents noised to a random t in
[generated_min_timestep, generated_max_timestep] and denoised in one step by the keyframe U-Net of
`generated_pipeline` (its x0 prediction, conditioned on the clip's caption and fps); that is where
the flicker of generated clips comes from. The target y is the real clip x, or for the
generated-like clips with `generated_target: image_decoder` the frozen initial image decoder's
frame-by-frame decoding of the same latents (their own shape: the decoder is not taught to turn a
degraded latent into the real clip, which blurs), while the frame differences always follow the
real clip:

    loss = rec(D(z), y) + difference_weight * rec(D(z)[f+1] - D(z)[f], x[f+1] - x[f])
           + warp_weight * mean |D(z)[f+1] - shift(D(z)[f], m_f)|

with rec the mean L1 (or squared) error per pixel value and m_f the real clip's global motion from
frame f to f+1 (a sub-pixel shift, `motion.py`): a temporal-consistency loss in the manner
of Lai et al. (2018), "Learning Blind Video Temporal Consistency", with a rigid global motion in
place of optical flow (right for Moving MNIST, where every clip is one rigidly moving digit). Unlike
the difference term it asks for *a* consistent digit, not for the real clip's shape. With
`warp_clips: generated` (the default) the term applies to the generated-like clips only: a clean
clip has its real clip as exact target, and real clips are themselves less consistent than this
term asks (measured: on all clips it cost 0.76 dB of round-trip PSNR, docs/video-vae.md).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from ..models.video_vae import TEMPORAL_SETTINGS, VideoAutoencoderKL
from ..motion import global_shifts, warped_difference
from ..vae import load_vae
from ..video_io import contact_sheet, write_video
from .config import Config
from .trainer import sample_generator, video_dataset
from .vae_task import validation_clips


def load_keyframe_pipeline(path: str | None):
    """The keyframe pipeline (U-Net, text encoder) that makes generated-like latents."""
    from ..pipelines.keyframes import load_pipeline

    return load_pipeline(path, device="cpu", dtype="fp32", progress_bar=False)


def build_video_vae(config: Config) -> VideoAutoencoderKL:
    settings = config.video_vae
    if not settings.init:
        raise ValueError("video_vae.init: name the image VAE (an AutoencoderKL folder) to start from")
    path = Path(settings.init)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"video_vae.init: {path} is not a VAE folder (no config.json)")
    vae = load_vae(path)
    if isinstance(vae, VideoAutoencoderKL):
        return vae  # continue: its own temporal layers and settings
    return VideoAutoencoderKL.from_image_vae(vae, **{key: getattr(settings, key) for key in TEMPORAL_SETTINGS})


def freeze(model: VideoAutoencoderKL, train_decoder: bool) -> None:
    """Encoder (and quant_conv) frozen; the decoder too unless `train_decoder`; temporal layers train."""
    model.requires_grad_(False)
    model.temporal_attentions.requires_grad_(True)
    if train_decoder:
        model.decoder.requires_grad_(True)
        if model.post_quant_conv is not None:
            model.post_quant_conv.requires_grad_(True)


def frame_differences(video: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, C, F - 1, H, W): frame f+1 minus frame f."""
    return video[:, :, 1:] - video[:, :, :-1]


class VideoVAETask:
    name = "video_vae"

    def __init__(self, config: Config, accelerator):
        self.config, self.device = config, accelerator.device
        settings = config.video_vae
        if settings.generated_min_timestep > settings.generated_max_timestep:
            raise ValueError("video_vae.generated_min_timestep must not exceed video_vae.generated_max_timestep")
        self.model = build_video_vae(config)
        if settings.warp_clips not in ("generated", "all"):
            raise ValueError(f"video_vae.warp_clips: generated or all, got {settings.warp_clips!r}")
        if settings.generated_target not in ("real", "image_decoder"):
            raise ValueError(f"video_vae.generated_target: real or image_decoder, got {settings.generated_target!r}")
        self.reference = None  # the initial image decoder, frozen: the target of generated-like clips
        if settings.generated_target == "image_decoder" and settings.generated_fraction > 0:
            self.reference = copy.deepcopy(self.model).to(self.device).requires_grad_(False).eval()
        freeze(self.model, settings.train_decoder)
        self.model.train()
        self.pipe = None
        if settings.generated_fraction > 0:
            self.pipe = load_keyframe_pipeline(settings.generated_pipeline)
            self.pipe.unet.to(self.device).requires_grad_(False).eval()
            self.pipe.text_encoder.to(self.device).requires_grad_(False).eval()
            scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
            self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device)
            self.prediction_type = scheduler.config.prediction_type
            if settings.generated_max_timestep >= len(self.alphas_cumprod):
                raise ValueError(f"video_vae.generated_max_timestep: must be below {len(self.alphas_cumprod)}")

    def dataset(self, rank: int, world_size: int, start_micro_batch: int):
        return video_dataset(self.config, rank, world_size, start_micro_batch)

    # -- latents --------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, vae: VideoAutoencoderKL, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) -> unscaled posterior-mode latents (B, C, F, h, w) with the frozen encoder."""
        b = video.shape[0]
        frames = video.transpose(1, 2).flatten(0, 1)
        latents = vae.encode(frames).latent_dist.mode()
        return latents.unflatten(0, (b, -1)).transpose(1, 2)

    @torch.no_grad()
    def generated_like(self, vae, latents: torch.Tensor, batch: dict) -> tuple[torch.Tensor, list[int]]:
        """Replace (seeded by stream position) some clips' latents by the U-Net's one-step x0 estimate;
        also returns the indices of those clips."""
        settings, seed = self.config.video_vae, self.config.train.seed
        if self.pipe is None:
            return latents, []
        chosen, noise, steps = [], [], []
        for i, position in enumerate(batch["position"]):
            generator = sample_generator(seed, int(position), salt=3)
            if torch.rand((), generator=generator).item() < settings.generated_fraction:
                chosen.append(i)
                steps.append(torch.randint(settings.generated_min_timestep, settings.generated_max_timestep + 1, (),
                                           generator=generator))
                noise.append(torch.randn(latents.shape[1:], generator=generator))
        if not chosen:
            return latents, []
        scale = vae.config.scaling_factor
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        clean = (latents[chosen] - shift) * scale
        t = torch.stack(steps).to(self.device)
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
        noisy = ab.sqrt() * clean + (1 - ab).sqrt() * torch.stack(noise).to(self.device)
        from ..text import encode_prompts

        context = encode_prompts(self.pipe.tokenizer, self.pipe.text_encoder, [batch["caption"][i] for i in chosen],
                                 device=self.device)
        out = self.pipe.unet(noisy, t, context, fps=batch["fps"][chosen].to(self.device)).sample
        if self.prediction_type == "v_prediction":
            x0 = ab.sqrt() * noisy - (1 - ab).sqrt() * out
        else:
            x0 = (noisy - (1 - ab).sqrt() * out) / ab.sqrt()
        latents = latents.clone()
        latents[chosen] = x0 / scale + shift
        return latents, chosen

    # -- loss -----------------------------------------------------------------------------------
    def loss(self, model, batch: dict) -> torch.Tensor:
        vae = getattr(model, "module", model)
        video = batch["pixel_values"].to(self.device).float()
        latents, chosen = self.generated_like(vae, self.encode(vae, video), batch)
        decoded = vae.decode_video(latents)
        settings = self.config.video_vae
        target = video
        if self.reference is not None and chosen:
            target = video.clone()
            with torch.no_grad():
                target[chosen] = self.reference.decode_video(latents[chosen], temporal=False)
        rec = F.l1_loss if settings.reconstruction_loss == "l1" else F.mse_loss
        loss = rec(decoded, target)
        if settings.difference_weight and video.shape[2] > 1:
            loss = loss + settings.difference_weight * rec(frame_differences(decoded), frame_differences(video))
        warped = chosen if settings.warp_clips == "generated" else list(range(len(video)))
        if settings.warp_weight and video.shape[2] > 1 and warped:
            _, motion = global_shifts((video[warped] * 0.5 + 0.5).mean(dim=1))
            loss = loss + settings.warp_weight * warped_difference(decoded[warped], motion)
        return loss

    # -- samples and save -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, vae, folder: Path) -> None:
        """Real | image decoder | VideoVAE for fixed clips: an mp4 each and one contact sheet PNG."""
        from PIL import Image

        was_training = vae.training
        vae.eval()
        clips = validation_clips(self.config, self.config.video_vae.sample_clips).to(self.device)
        latents = self.encode(vae, clips)
        image = vae.decode_video(latents, temporal=False).clamp(-1, 1)
        video = vae.decode_video(latents).clamp(-1, 1)
        to_np = lambda x: (x.permute(0, 2, 3, 4, 1).cpu().numpy() * 0.5 + 0.5).astype(np.float32)  # noqa: E731
        real, image, video = to_np(clips), to_np(image), to_np(video)
        rows = []
        for i in range(len(real)):
            write_video(folder / f"{i:02d}-real-image-video.mp4", np.concatenate([real[i], image[i], video[i]], axis=2),
                        self.config.output.sample_fps)
            rows += [real[i], image[i], video[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(contact_sheet(rows)).save(folder / "contact-sheet.png")
        vae.train(was_training)

    def save_final(self, vae, folder: Path) -> None:
        vae.eval()
        vae.save_pretrained(folder)
