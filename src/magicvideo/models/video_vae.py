"""The VideoVAE: an `AutoencoderKL` whose decoder has directed temporal attention layers.

MagicVideo decodes with a VideoVAE: decoding each frame on its own gives small frame-to-frame
changes ("pixel dithering") that read as flicker. `VideoAutoencoderKL` keeps the image VAE's
encoder (and so its latent space) untouched and inserts directed temporal attention layers in the
decoder, each a residual branch whose gate starts at zero: fresh from `from_image_vae`, it decodes
exactly like the image VAE it was built from.

Temporal attention (`WindowedTemporalAttention`): at every spatial position of a decoder feature
map, the frames form a sequence; frame p attends to frames q with p - window < q <= p (mask
applied before the softmax, so strictly causal), with a learned bias per head that is a function
of the *relative* distance p - q only: a sinusoidal embedding of the distance projected to the
heads, plus an ALiBi-style term -slope_h * (p - q) whose slopes start at 2, 1, 1/2, ....

Alignment: the earlier frames' features are moved onto the current frame before it attends to
them, by the clip's global motion (the sub-pixel shift between consecutive frames of the image
decoder's decoding, searched within +-`temporal_alignment` pixels, `motion()`), so that mixing
earlier frames of moving content does not blur it. One motion per frame (a camera pan, a rigidly
moving digit), not a flow field: the layer is general, the estimator simple.

Gate: a layer does not add an attention output but pulls each frame towards `mix`, the attention's
convex combination of its own features and its aligned earlier frames' features: x + gate * (mix -
x), the gate per channel and position computed from the frame and mix - x, and zero at first.

Because nothing depends on the absolute frame index, the motion of frame f depends on frames <= f
only and every other decoder op is per frame, a long clip decodes in chunks with the last
`window - 1` frames and their positions carried from chunk to chunk (a cache per layer), and the
result equals whole-clip decoding (up to float rounding). Memory stays bounded; no seam appears at
chunk borders.

Placement (config `temporal_layers`): names of decoder stages after which a layer sits:
``"in"`` (after conv_in), ``"mid"`` (after the mid-block), ``"up0"``, ``"up1"``, ... (after up
block i). The paper's two layers are the default: ``["mid", "up0"]``.

API:
- `VideoAutoencoderKL.from_image_vae(vae, **temporal_config)`
- `decode_video(latents (B, C, F, h, w), chunk_size=None, temporal=True) -> (B, 3, F, H, W)`:
  unscaled latents, as `decode()` takes; `temporal=False` decodes with the plain image decoder
  (same weights, no second copy).
- `decode()` of 4-D latents is `AutoencoderKL.decode`: image decoding, frame by frame.
- `magicvideo.vae` decodes scaled latents with either kind of VAE and loads a VAE folder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers import ModelMixin  # noqa: F401  diffusers' pipeline loader looks the base class up in this module
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from einops import rearrange
from torch import nn

from ..errors import InvalidArgumentError

DEFAULT_TEMPORAL_LAYERS = ("mid", "up0")
TEMPORAL_SETTINGS = ("temporal_layers", "temporal_attention_heads", "temporal_window", "temporal_alignment")
# settings of variants that were measured and not shipped (docs/video-vae.md): what became of them
REMOVED_SETTINGS = {
    "temporal_radius": "attention over a neighbourhood of earlier frames was not shipped; the alignment "
                       "(temporal_alignment) follows the motion",
    "temporal_recency_bias": "every layer has the recency bias",
    "temporal_gated": "every layer is gated",
}


def check_removed_settings(settings) -> None:
    """Refuse, naming it, a setting of a VideoVAE variant that no longer exists."""
    for key in sorted(set(settings) & set(REMOVED_SETTINGS)):
        raise InvalidArgumentError(key, f"this VideoVAE setting was removed: {REMOVED_SETTINGS[key]}")


class WindowedTemporalAttention(nn.Module):
    """Directed, aligned, gated multi-head attention over a bounded past window of frames (see the
    module docstring); its gate starts at zero, so a fresh layer is the identity.

    `forward(x, num_frames, positions, cache)`: x is (B * F, C, H, W) with frames folded into the
    batch (frame-major within each clip); `positions` (B, F, 2) are the frames' content positions
    (dy, dx) in this layer's pixels. `cache` (a dict, or None) carries the last `window - 1` frames
    of the previous chunk and their positions; it is read and then updated in place.
    """

    def __init__(self, channels: int, num_heads: int = 4, window: int = 16, position_dim: int = 32):
        super().__init__()
        if channels % num_heads:
            raise InvalidArgumentError("temporal_attention_heads",
                                       f"{channels} channels do not split into {num_heads} heads")
        if window < 1:
            raise InvalidArgumentError("temporal_window", f"must be at least 1, got {window}")
        self.num_heads, self.window, self.position_dim = num_heads, window, position_dim
        self.norm = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.position_bias = nn.Linear(position_dim, num_heads)  # sinusoid(p - q) -> one bias per head
        nn.init.zeros_(self.position_bias.weight)
        nn.init.zeros_(self.position_bias.bias)
        # ALiBi-style recency prior (Press et al., 2022): head h adds -slope_h * (p - q), slopes 2, 1,
        # 1/2, ... (for 4 heads), learnt from there, so that some heads start on the current and
        # previous frames rather than uniformly over the whole window.
        self.recency_slope = nn.Parameter(2.0 ** (1 - 4 * torch.arange(num_heads) / num_heads))
        # the gate, per channel, from the current frame and its distance to the mix (zero at first)
        self.to_out = nn.Linear(2 * channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def attention_bias(self, queries: int, past: int, device, dtype) -> torch.Tensor:
        """(heads, queries, past + queries): relative-position bias, -inf outside the causal window."""
        query_pos = torch.arange(queries, device=device) + past
        key_pos = torch.arange(past + queries, device=device)
        distance = query_pos[:, None] - key_pos[None, :]
        allowed = (distance >= 0) & (distance < self.window)
        embedding = get_timestep_embedding(distance.clamp(0, self.window - 1).flatten(), self.position_dim,
                                           flip_sin_to_cos=True).to(dtype)
        bias = self.position_bias(embedding).view(queries, past + queries, self.num_heads).permute(2, 0, 1)
        bias = bias - self.recency_slope.to(dtype)[:, None, None] * distance.clamp(min=0).to(dtype)
        return bias.masked_fill(~allowed, float("-inf"))

    def forward(self, x: torch.Tensor, num_frames: int, positions: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """Frame q's features are moved by positions[p] - positions[q] before query frame p attends
        to them (per position): the attention's values are the frames' own features, moved, so that
        it gives `mix`, a convex combination of the current frame and the aligned earlier ones (each
        head mixes its share of the channels), and the layer returns x + gate * (mix - x) with a
        per-channel gate computed from the normed current frame and mix - x: a frame is pulled
        towards its aligned past only as far as, and where, the gate learns to."""
        tokens = rearrange(x, "(b f) c h w -> b f h w c", f=num_frames)
        normed = self.norm(tokens)  # (B, F, H, W, C)
        q, frames = self.to_q(normed), torch.cat([normed, tokens], -1)
        past = 0
        if cache is not None:
            if "frames" in cache:
                past = cache["frames"].shape[1]
                frames, positions = torch.cat([cache["frames"], frames], 1), torch.cat([cache["positions"], positions], 1)
            start = max(0, frames.shape[1] - (self.window - 1))  # the last window - 1 frames
            cache["frames"], cache["positions"] = frames[:, start:], positions[:, start:]
        scores, values, valid = [], [], []
        split = lambda t: rearrange(t, "b f h w (heads d) -> b f h w heads d", heads=self.num_heads)  # noqa: E731
        query = split(q) * (q.shape[-1] // self.num_heads) ** -0.5  # scaled as in SDPA
        query_index = torch.arange(num_frames, device=x.device) + past
        for distance in range(min(self.window, past + num_frames)):  # key frame p - distance
            index = (query_index - distance).clamp(min=0)
            moved = frames[:, index]
            if distance:  # moved before the (per-position, linear) key projection: the same
                moved = move(moved, positions[:, query_index] - positions[:, index])
            moved_normed, moved_features = moved.chunk(2, -1)
            scores.append((query * split(self.to_k(moved_normed))).sum(-1))  # (B, F, H, W, heads)
            values.append(split(moved_features))
            valid.append(query_index - distance >= 0)
        # attention over the few distances, per position and head: a softmax over the last axis
        bias = self.attention_bias(1, len(scores) - 1, x.device, q.dtype)[:, 0].flip(-1)  # (heads, distances)
        bias = bias[None].masked_fill(~torch.stack(valid, -1)[:, None], float("-inf"))  # (F, heads, distances)
        weights = (torch.stack(scores, -1) + bias[:, None, None]).softmax(-1)  # (B, F, H, W, heads, distances)
        mix = values[0] * weights[..., 0, None]
        for i, value in enumerate(values[1:], 1):
            mix.addcmul_(value, weights[..., i, None])
        mix = rearrange(mix, "b f h w heads d -> b f h w (heads d)")
        out = self.to_out(torch.cat([normed, mix - tokens], -1)) * (mix - tokens)
        return x + rearrange(out, "b f h w c -> (b f) c h w")


def cubic_weights(fraction: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    """(N,) sub-pixel shifts in [0, 1) -> (N, 4): Keys' cubic convolution weights (a = -0.75, as torch's
    bicubic mode) of the samples at i - n - 2 ... i - n + 1 for out[i] = x[i - n - fraction]."""
    d = ((1 - fraction)[:, None] - torch.arange(-1, 3, device=fraction.device)).abs()  # distances to the 4 taps
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def move(features: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """features (B, F, H, W, C) moved by shift (B, F, 2) = (dy, dx) pixels: out[y, x] = features[y - dy,
    x - dx], bicubic, edges repeated (what grid_sample's bicubic mode with border padding gives; done
    as a per-frame integer crop of the edge-padded maps and a separable 4-tap filter, much faster)."""
    b, f, h, w, c = features.shape
    shift = shift.detach().reshape(b * f, 2).float()
    whole = shift.floor()
    pad = int(whole.abs().max()) + 2
    maps = F.pad(rearrange(features, "b f h w c -> (b f) c h w"), (pad, pad, pad, pad), mode="replicate")
    starts = (pad - 2 - whole).long().tolist()  # the first tap of out[0] along y and x, per frame
    crops = torch.stack([m[:, y:y + h + 3, x:x + w + 3] for m, (y, x) in zip(maps, starts)])  # (B*F, C, H+3, W+3)
    wy, wx = (cubic_weights(shift[:, i] - whole[:, i]).to(features.dtype)[:, :, None, None, None] for i in (0, 1))
    rows = crops[:, :, :h] * wy[:, 0]
    for k in range(1, 4):
        rows.addcmul_(crops[:, :, k:k + h], wy[:, k])
    moved = rows[..., :w] * wx[:, 0]
    for k in range(1, 4):
        moved.addcmul_(rows[..., k:k + w], wx[:, k])
    return rearrange(moved, "(b f) c h w -> b f h w c", b=b)


def _stage_channels(block_out_channels, name: str) -> int:
    levels = len(block_out_channels)
    if name in ("in", "mid"):
        return block_out_channels[-1]
    if name.startswith("up") and name[2:].isdigit() and int(name[2:]) < levels:
        return list(reversed(block_out_channels))[int(name[2:])]
    stages = ", ".join(["in", "mid"] + [f"up{i}" for i in range(levels)])
    raise InvalidArgumentError("temporal_layers", f"unknown decoder stage {name!r}; choose from {stages}")


class VideoAutoencoderKL(AutoencoderKL):
    """`AutoencoderKL` + directed temporal attention in the decoder (see the module docstring).

    Extra config keys: `temporal_layers` (decoder stages, default ["mid", "up0"]),
    `temporal_attention_heads` (default 4), `temporal_window` (frames a frame may attend to,
    itself included; default 16) and `temporal_alignment` (the motion search radius in output
    pixels per frame, at least 1; default 6, the bundled digits model's). All other keys and all
    weights are `AutoencoderKL`'s, so an `AutoencoderKL` loads this model's folder too (ignoring the
    temporal layers). A config naming a removed setting (`REMOVED_SETTINGS`) is refused, naming it.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: tuple[str] = ("DownEncoderBlock2D",),
        up_block_types: tuple[str] = ("UpDecoderBlock2D",),
        block_out_channels: tuple[int] = (64,),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 32,
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        latents_mean: tuple[float] | None = None,
        latents_std: tuple[float] | None = None,
        force_upcast: bool = True,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
        temporal_layers: tuple[str] = DEFAULT_TEMPORAL_LAYERS,
        temporal_attention_heads: int = 4,
        temporal_window: int = 16,
        temporal_alignment: int = 6,
    ):
        super().__init__(
            in_channels=in_channels, out_channels=out_channels, down_block_types=down_block_types,
            up_block_types=up_block_types, block_out_channels=block_out_channels, layers_per_block=layers_per_block,
            act_fn=act_fn, latent_channels=latent_channels, norm_num_groups=norm_num_groups, sample_size=sample_size,
            scaling_factor=scaling_factor, shift_factor=shift_factor, latents_mean=latents_mean,
            latents_std=latents_std, force_upcast=force_upcast, use_quant_conv=use_quant_conv,
            use_post_quant_conv=use_post_quant_conv, mid_block_add_attention=mid_block_add_attention)
        if isinstance(temporal_layers, str):
            raise InvalidArgumentError("temporal_layers", f"must be a list of decoder stages, got {temporal_layers!r}")
        if len(set(temporal_layers)) != len(temporal_layers):
            raise InvalidArgumentError("temporal_layers", f"a stage is named twice in {list(temporal_layers)}")
        if temporal_alignment < 1:
            raise InvalidArgumentError("temporal_alignment", f"must be at least 1, got {temporal_alignment}")
        self.temporal_attentions = nn.ModuleDict({
            name: WindowedTemporalAttention(_stage_channels(block_out_channels, name), temporal_attention_heads,
                                            temporal_window)
            for name in temporal_layers})

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        check_removed_settings(config_dict)
        return super().extract_init_dict(config_dict, **kwargs)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_image_vae(cls, vae: AutoencoderKL, **temporal_config) -> "VideoAutoencoderKL":
        """A VideoVAE with `vae`'s weights (shared by copy) and fresh temporal layers that decode
        exactly like `vae` until trained. `temporal_config`: any of TEMPORAL_SETTINGS."""
        check_removed_settings(temporal_config)
        unknown = set(temporal_config) - set(TEMPORAL_SETTINGS)
        if unknown:
            raise InvalidArgumentError(sorted(unknown)[0], f"not a VideoVAE setting ({', '.join(TEMPORAL_SETTINGS)})")
        if not isinstance(vae, AutoencoderKL):
            raise InvalidArgumentError("vae", f"expected a diffusers AutoencoderKL, got {type(vae).__name__}")
        config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
        if isinstance(vae, VideoAutoencoderKL):
            for key in TEMPORAL_SETTINGS:
                config.pop(key, None)
        config.update(temporal_config)
        model = cls.from_config(config)
        state = {k: v for k, v in vae.state_dict().items() if not k.startswith("temporal_attentions.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not name.startswith("temporal_attentions.") for name in missing):
            raise ValueError(f"from_image_vae: weights do not match (missing {missing}, unexpected {unexpected})")
        param = next(vae.parameters())
        model.to(param.device)
        if param.dtype != torch.float32:
            model.to(dtype=param.dtype)
        return model.train(vae.training)

    def temporal_parameters(self):
        return self.temporal_attentions.parameters()

    # -- decoding -------------------------------------------------------------------------------
    def _temporal(self, name: str, sample: torch.Tensor, num_frames: int, caches: dict,
                  positions: torch.Tensor) -> torch.Tensor:
        if name not in self.temporal_attentions:
            return sample
        positions = positions * positions.new_tensor(sample.shape[-2:])  # fractions of the frame -> this stage's pixels
        return self.temporal_attentions[name](sample, num_frames, positions, caches.setdefault(name, {}))

    @torch.no_grad()
    def motion(self, frames: torch.Tensor, num_frames: int, caches: dict) -> torch.Tensor:
        """Content positions (B, F, 2) = (dy / H, dx / W), in fractions of the frame, of the image
        decoder's frames (B * F, 3, H, W): the global motion between consecutive frames
        (motion.global_shifts, searched within +-temporal_alignment pixels), summed from the clip's
        first frame. Causal: frame f's position depends on frames <= f only; `caches["motion"]`
        carries the last frame and its position from chunk to chunk."""
        from ..motion import global_shifts

        frames = rearrange(frames.clamp(-1, 1).mean(1), "(b f) h w -> b f h w", f=num_frames) * 0.5 + 0.5
        state = caches.setdefault("motion", {})
        if "frame" in state:
            frames = torch.cat([state["frame"], frames], 1)
            start = state["position"]
        else:
            start = torch.zeros(frames.shape[0], 1, 2, device=frames.device)
        steps = global_shifts(frames.float(), self.config.temporal_alignment)[1] if frames.shape[1] > 1 else start[:, :0]
        positions = torch.cat([start, start + steps.cumsum(1)], 1)[:, -num_frames:]
        state["frame"], state["position"] = frames[:, -1:], positions[:, -1:]
        return (positions / positions.new_tensor(frames.shape[-2:])).to(frames.dtype)

    def _stages(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        """The decoder as its named stages, each of which a temporal layer may follow: in (post_quant_conv
        and conv_in), mid, up0, up1, ...; then `_head`. Run in order, they are `AutoencoderKL._decode`."""
        decoder = self.decoder

        def first(z):
            return decoder.conv_in(z if self.post_quant_conv is None else self.post_quant_conv(z))

        return [("in", first), ("mid", lambda x: decoder.mid_block(x, None))] + [
            (f"up{i}", lambda x, block=block: block(x, None)) for i, block in enumerate(decoder.up_blocks)]

    def _head(self, sample: torch.Tensor) -> torch.Tensor:
        decoder = self.decoder
        return decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(sample)))

    def _decode_frames(self, z: torch.Tensor, num_frames: int, caches: dict) -> torch.Tensor:
        """Latent frames (B * F, C, h, w), frame-major per clip -> pixels, temporal layers applied
        (`caches`: carried from chunk to chunk). The stages up to the first temporal layer are the
        image decoder's: the image decoding that gives the motion continues from them instead of
        starting again."""
        stages = self._stages()
        names = [name for name, _ in stages]
        shared = min((names.index(name) + 1 for name in self.temporal_attentions), default=len(stages))
        sample = z
        for _, stage in stages[:shared]:
            sample = stage(sample)
        with torch.no_grad():  # the motion is not learnt: no graph for the image decoding
            image = sample
            for _, stage in stages[shared:]:
                image = stage(image)
            positions = self.motion(self._head(image), num_frames, caches)
        sample = self._temporal(names[shared - 1], sample, num_frames, caches, positions)
        for name, stage in stages[shared:]:
            sample = self._temporal(name, stage(sample), num_frames, caches, positions)
        return self._head(sample)

    def decode_video(self, latents: torch.Tensor, chunk_size: int | None = None, temporal: bool = True,
                     caches: dict | None = None) -> torch.Tensor:
        """Unscaled latents (B, C, F, h, w) -> frames (B, 3, F, H, W) (not clamped).

        `chunk_size` frames are decoded at a time (None: the whole clip at once); the temporal
        layers carry the last `temporal_window - 1` frames and the motion its last frame between
        chunks, so the result equals whole-clip decoding. `caches`: a dict (empty at first) that
        carries them between calls too, for decoding a long clip piece by piece as it is made.
        `temporal=False`: the plain image decoder, frame by frame (the same weights without the
        temporal layers).
        """
        if latents.ndim != 5:
            raise InvalidArgumentError("latents", f"expected (B, C, F, h, w), got shape {tuple(latents.shape)}")
        if chunk_size is not None and chunk_size < 1:
            raise InvalidArgumentError("chunk_size", f"must be at least 1, got {chunk_size}")
        batch, _, frames = latents.shape[:3]
        chunk_size = chunk_size or frames
        caches = ({} if caches is None else caches) if temporal else None
        outputs = []
        for start in range(0, frames, chunk_size):
            chunk = latents[:, :, start:start + chunk_size]
            count = chunk.shape[2]
            z = rearrange(chunk, "b c f h w -> (b f) c h w")
            if temporal:
                out = self._decode_frames(z, count, caches)
            else:
                out = self._decode(z).sample
            outputs.append(rearrange(out, "(b f) c h w -> b c f h w", b=batch))
        return torch.cat(outputs, dim=2)

