"""The VideoVAE: an `AutoencoderKL` whose decoder has directed temporal attention layers.

MagicVideo decodes with a VideoVAE: decoding each frame on its own gives small frame-to-frame
changes ("pixel dithering") that read as flicker. `VideoAutoencoderKL` keeps the image VAE's
encoder (and so its latent space) untouched and inserts directed temporal attention layers in the
decoder, each a residual branch with a zero-initialised output projection: fresh from
`from_image_vae`, it decodes exactly like the image VAE it was built from.

Temporal attention (`WindowedTemporalAttention`): at every spatial position of a decoder feature
map, the frames form a sequence; frame p attends to frames q with p - window < q <= p (mask
applied before the softmax, so strictly causal), with a learned bias per head that is a function
of the *relative* distance p - q only (a sinusoidal embedding of the distance, projected to the
heads; with `temporal_recency_bias`, plus an ALiBi-style term -slope_h * (p - q) whose slopes start
at 2, 1, 1/2, ...). Because nothing depends on the absolute frame index and every other decoder op
is per frame, a long clip decodes in chunks with the keys/values of the last `window - 1` frames
carried from chunk to chunk (a KV cache, one per layer), and the result equals whole-clip decoding
(up to float rounding). Memory stays bounded; no seam appears at chunk borders.

Alignment (config `temporal_alignment` r > 0): the earlier frames' features are moved onto the
current frame before it attends to them, by the clip's global motion (the sub-pixel shift between
consecutive frames of the image decoder's decoding, searched within +-r pixels, `motion()`), so that
mixing earlier frames of moving content does not blur it; the motion of frame f depends on frames
<= f only, and the last frame and its position are carried between chunks. One motion per frame
(a camera pan, a rigidly moving digit), not a flow field: the layer is general, the estimator simple.
With `temporal_gated` (needs alignment) a layer does not add an attention output but pulls each frame
towards `mix`, the attention's convex combination of its own features and its aligned earlier frames'
features: x + gate * (mix - x), the gate per channel and position computed from the frame and mix - x
and zero at first.

Placement (config `temporal_layers`): names of decoder stages after which a layer sits:
``"in"`` (after conv_in), ``"mid"`` (after the mid-block), ``"up0"``, ``"up1"``, ... (after up
block i). The paper's two layers are the default: ``["mid", "up0"]``.

API:
- `VideoAutoencoderKL.from_image_vae(vae, **temporal_config)`
- `decode_video(latents (B, C, F, h, w), chunk_size=None, temporal=True) -> (B, 3, F, H, W)`:
  unscaled latents, as `decode()` takes; `temporal=False` decodes with the plain image decoder
  (same weights, no second copy).
- `decode()` of 4-D latents is `AutoencoderKL.decode`: image decoding, frame by frame.
- `decode_latents_video(vae, scaled_latents, chunk_size, decoder)`: scaled latents (as the
  diffusion model produces them) -> video, for any `AutoencoderKL`; the pipeline's hook.
- `load_vae(folder)`: an `AutoencoderKL` or `VideoAutoencoderKL` folder, as its config names it.
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
DECODERS = ("image", "video")
TEMPORAL_SETTINGS = ("temporal_layers", "temporal_attention_heads", "temporal_window", "temporal_recency_bias",
                     "temporal_radius", "temporal_alignment", "temporal_gated")


class WindowedTemporalAttention(nn.Module):
    """Directed multi-head self-attention over frames with a bounded past window and relative
    position bias; residual, output projection initialised to zero.

    With `radius` r > 0 a query at (frame p, y, x) attends to the (2r + 1)^2 positions around
    (y, x) in every frame q of its window (p - window < q <= p), not only to (y, x): content moving
    by up to r feature pixels per frame can be followed, so mixing earlier frames need not blur it.
    Neighbours outside the feature map are masked. r = 0 is plain per-position temporal attention.

    `forward(x, num_frames, cache)`: x is (B * F, C, H, W) with frames folded into the batch
    (frame-major within each clip). `cache` (a dict, or None) carries the keys/values of the last
    `window - 1` frames of the previous chunk; it is read and then updated in place.
    """

    def __init__(self, channels: int, num_heads: int = 4, window: int = 16, position_dim: int = 32,
                 recency_bias: bool = False, radius: int = 0, gated: bool = False):
        super().__init__()
        if channels % num_heads:
            raise InvalidArgumentError("temporal_attention_heads",
                                       f"{channels} channels do not split into {num_heads} heads")
        if window < 1:
            raise InvalidArgumentError("temporal_window", f"must be at least 1, got {window}")
        if radius < 0:
            raise InvalidArgumentError("temporal_radius", f"must be at least 0, got {radius}")
        self.num_heads, self.window, self.position_dim, self.radius, self.gated = num_heads, window, position_dim, radius, gated
        self.norm = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = None if gated else nn.Linear(channels, channels, bias=False)
        self.position_bias = nn.Linear(position_dim, num_heads)  # sinusoid(p - q) -> one bias per head
        nn.init.zeros_(self.position_bias.weight)
        nn.init.zeros_(self.position_bias.bias)
        # ALiBi-style recency prior (Press et al., 2022): head h adds -slope_h * (p - q), slopes 2, 1,
        # 1/2, ... (for 4 heads), learnt from there. Without it a fresh layer attends uniformly over
        # its whole window; with it some heads start on the current and previous frames.
        self.recency_slope = nn.Parameter(2.0 ** (1 - 4 * torch.arange(num_heads) / num_heads)) if recency_bias else None
        # a learnt bias per head and spatial offset (zero at first)
        self.offset_bias = nn.Parameter(torch.zeros(num_heads, (2 * radius + 1) ** 2)) if radius else None
        # gated: the gate per channel from the current frame and its distance to the mix; otherwise the output
        self.to_out = nn.Linear(2 * channels if gated else channels, channels)
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
        if self.recency_slope is not None:
            bias = bias - self.recency_slope.to(dtype)[:, None, None] * distance.clamp(min=0).to(dtype)
        return bias.masked_fill(~allowed, float("-inf"))

    def neighbourhood(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B * H * W, F, C) -> (B * H * W, F, K, C): each position's K = (2r + 1)^2 neighbours (zero outside)."""
        size = 2 * self.radius + 1
        maps = rearrange(tokens, "(b h w) f c -> (b f) c h w", h=h, w=w)
        patches = F.unfold(maps, size, padding=self.radius)
        return rearrange(patches, "(b f) (c k) (h w) -> (b h w) f k c", f=tokens.shape[1], k=size * size, h=h)

    def forward(self, x: torch.Tensor, num_frames: int, cache: dict | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        if self.gated and positions is None:  # its mix needs the frames' positions: none given, no motion
            positions = x.new_zeros(x.shape[0] // num_frames, num_frames, 2)
        if positions is not None:
            return self.aligned(x, num_frames, cache, positions)
        _, _, h, w = x.shape
        tokens = rearrange(x, "(b f) c h w -> (b h w) f c", f=num_frames)
        normed = self.norm(tokens)
        split = lambda t: rearrange(t, "n f k (heads d) -> n heads f k d", heads=self.num_heads)  # noqa: E731
        q = rearrange(self.to_q(normed), "n f (heads d) -> n heads f d", heads=self.num_heads)
        k, v = (self.to_k(normed), self.to_v(normed))
        if self.radius:
            k, v = self.neighbourhood(k, h, w), self.neighbourhood(v, h, w)
        else:
            k, v = k[:, :, None], v[:, :, None]
        k, v = split(k), split(v)  # (n, heads, frames, K, d)
        past = 0
        if cache is not None:
            if "k" in cache:
                past = cache["k"].shape[2]
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            start = max(0, k.shape[2] - (self.window - 1))  # the last window - 1 frames
            cache["k"], cache["v"] = k[:, :, start:], v[:, :, start:]
        neighbours = k.shape[3]
        bias = self.attention_bias(num_frames, past, x.device, q.dtype)  # (heads, Q, frames)
        bias = bias.repeat_interleave(neighbours, dim=-1)  # (heads, Q, frames * K)
        if self.radius:
            inside = F.unfold(torch.ones(1, 1, h, w, device=x.device), 2 * self.radius + 1, padding=self.radius)
            inside = rearrange(inside, "1 k (h w) -> (h w) k", h=h).bool()  # (H * W, K)
            offsets = self.offset_bias.to(q.dtype).masked_fill(~inside[:, None], float("-inf"))  # (H*W, heads, K)
            bias = bias[None] + offsets.repeat(1, 1, k.shape[2])[:, :, None]  # (H*W, heads, Q, frames * K)
        batch = x.shape[0] // num_frames
        q = rearrange(q, "(b hw) heads f d -> b hw heads f d", b=batch)
        k, v = (rearrange(t, "(b hw) heads f k d -> b hw heads (f k) d", b=batch) for t in (k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = self.to_out(rearrange(out, "b hw heads f d -> (b hw) f (heads d)"))
        return x + rearrange(out, "(b h w) f c -> (b f) c h w", h=h, w=w)

    def aligned(self, x: torch.Tensor, num_frames: int, cache: dict | None, positions: torch.Tensor) -> torch.Tensor:
        """Attention over past frames moved onto the current one: `positions` (B, F, 2) are the
        frames' content positions (dy, dx) in this layer's pixels; frame q's keys and values are
        moved by positions[p] - positions[q] before query frame p attends to them (per position).

        Gated (`gated=True`): the values are the frames' own features, moved, so that the attention
        gives `mix`, a convex combination of the current frame and the aligned earlier ones (each
        head mixes its share of the channels), and the layer returns x + gate * (mix - x) with a
        per-channel gate computed from the normed current frame and mix - x (zero at first): a frame
        is pulled towards its aligned past only as far as, and where, the gate learns to."""
        tokens = rearrange(x, "(b f) c h w -> b f h w c", f=num_frames)
        normed = self.norm(tokens)  # (B, F, H, W, C)
        q, frames = self.to_q(normed), torch.cat([normed, tokens], -1) if self.gated else normed
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
            if distance:  # moved before the (per-position, linear) key and value projections: the same
                moved = move(moved, positions[:, query_index] - positions[:, index])
            moved_normed, moved_features = moved.chunk(2, -1) if self.gated else (moved, None)
            scores.append((query * split(self.to_k(moved_normed))).sum(-1))  # (B, F, H, W, heads)
            values.append(split(moved_features if self.gated else self.to_v(moved)))
            valid.append(query_index - distance >= 0)
        # attention over the few distances, per position and head: a softmax over the last axis
        bias = self.attention_bias(1, len(scores) - 1, x.device, q.dtype)[:, 0].flip(-1)  # (heads, distances)
        bias = bias[None].masked_fill(~torch.stack(valid, -1)[:, None], float("-inf"))  # (F, heads, distances)
        weights = (torch.stack(scores, -1) + bias[:, None, None]).softmax(-1)  # (B, F, H, W, heads, distances)
        out = values[0] * weights[..., 0, None]
        for i, value in enumerate(values[1:], 1):
            out.addcmul_(value, weights[..., i, None])
        out = rearrange(out, "b f h w heads d -> b f h w (heads d)")
        if self.gated:  # out is the mix
            out = self.to_out(torch.cat([normed, out - tokens], -1)) * (out - tokens)
        else:
            out = self.to_out(out)
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
    itself included; default 16), `temporal_recency_bias`, `temporal_radius`, `temporal_alignment` and
    `temporal_gated` (see the module docstring). All other keys and all weights are `AutoencoderKL`'s, so an
    `AutoencoderKL` loads this model's folder too (ignoring the temporal layers).
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
        temporal_recency_bias: bool = False,
        temporal_radius: int = 0,
        temporal_alignment: int = 0,
        temporal_gated: bool = False,
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
        self.temporal_attentions = nn.ModuleDict({
            name: WindowedTemporalAttention(_stage_channels(block_out_channels, name), temporal_attention_heads,
                                            temporal_window, recency_bias=temporal_recency_bias,
                                            radius=temporal_radius, gated=temporal_gated)
            for name in temporal_layers})
        if temporal_alignment < 0:
            raise InvalidArgumentError("temporal_alignment", f"must be at least 0, got {temporal_alignment}")
        if temporal_alignment and temporal_radius:
            raise InvalidArgumentError("temporal_alignment", "needs temporal_radius 0 (the motion aligns the past)")
        if temporal_gated and not temporal_alignment:
            raise InvalidArgumentError("temporal_gated", "needs temporal_alignment > 0 (it mixes aligned frames)")

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_image_vae(cls, vae: AutoencoderKL, **temporal_config) -> "VideoAutoencoderKL":
        """A VideoVAE with `vae`'s weights (shared by copy) and fresh temporal layers that decode
        exactly like `vae` until trained. `temporal_config`: any of TEMPORAL_SETTINGS."""
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
    def _temporal(self, name: str, sample: torch.Tensor, num_frames: int, caches: dict | None,
                  positions: torch.Tensor | None) -> torch.Tensor:
        if name not in self.temporal_attentions:
            return sample
        cache = None if caches is None else caches.setdefault(name, {})
        if positions is not None:  # fractions of the frame -> this stage's pixels
            positions = positions * positions.new_tensor(sample.shape[-2:])
        return self.temporal_attentions[name](sample, num_frames, cache, positions)

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

    def _decode_frames(self, z: torch.Tensor, num_frames: int, caches: dict | None) -> torch.Tensor:
        """Latent frames (B * F, C, h, w), frame-major per clip -> pixels, temporal layers applied.
        The stages up to the first temporal layer are the image decoder's: with alignment, the image
        decoding that gives the motion continues from them instead of starting again."""
        stages = self._stages()
        names = [name for name, _ in stages]
        shared = min((names.index(name) + 1 for name in self.temporal_attentions), default=len(stages))
        sample = z
        for _, stage in stages[:shared]:
            sample = stage(sample)
        positions = None
        if caches is not None and self.config.temporal_alignment:
            with torch.no_grad():  # the motion is not learnt: no graph for the image decoding
                image = sample
                for _, stage in stages[shared:]:
                    image = stage(image)
                positions = self.motion(self._head(image), num_frames, caches)
        sample = self._temporal(names[shared - 1], sample, num_frames, caches, positions)
        for name, stage in stages[shared:]:
            sample = self._temporal(name, stage(sample), num_frames, caches, positions)
        return self._head(sample)

    def decode_video(self, latents: torch.Tensor, chunk_size: int | None = None, temporal: bool = True) -> torch.Tensor:
        """Unscaled latents (B, C, F, h, w) -> frames (B, 3, F, H, W) (not clamped).

        `chunk_size` frames are decoded at a time (None: the whole clip at once); with temporal
        layers the keys/values of the last `temporal_window - 1` frames are carried between
        chunks, so the result equals whole-clip decoding. `temporal=False`: the plain image
        decoder, frame by frame (the same weights without the temporal layers).
        """
        if latents.ndim != 5:
            raise InvalidArgumentError("latents", f"expected (B, C, F, h, w), got shape {tuple(latents.shape)}")
        if chunk_size is not None and chunk_size < 1:
            raise InvalidArgumentError("chunk_size", f"must be at least 1, got {chunk_size}")
        batch, _, frames = latents.shape[:3]
        chunk_size = chunk_size or frames
        caches = {} if temporal else None
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


def decode_latents_video(vae: AutoencoderKL, latents: torch.Tensor, chunk_size: int | None = 16,
                         decoder: str = "video") -> torch.Tensor:
    """Scaled latents (B, C, F, h, w) (as a diffusion model makes them) -> video (B, 3, F, H, W) in
    [-1, 1], not clamped. `decoder="video"` uses the temporal decoder when `vae` is a
    `VideoAutoencoderKL` (and the image decoder otherwise); `"image"` always decodes frame by frame."""
    from ..vae import decode_video, scaling

    if decoder not in DECODERS:
        raise InvalidArgumentError("decoder", f"must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if not isinstance(vae, VideoAutoencoderKL):
        return decode_video(vae, latents, chunk_size or latents.shape[0] * latents.shape[2])
    scale, shift = scaling(vae)
    latents = latents.to(vae.device, vae.dtype) / scale + shift
    return vae.decode_video(latents, chunk_size, temporal=decoder == "video")


def load_vae(folder) -> AutoencoderKL:
    """A VAE folder loaded as the class its config names: `VideoAutoencoderKL` (whose `encode` and
    `decode` are the image VAE's) or diffusers' `AutoencoderKL`."""
    video = AutoencoderKL.load_config(folder).get("_class_name") == VideoAutoencoderKL.__name__
    return (VideoAutoencoderKL if video else AutoencoderKL).from_pretrained(folder)


def is_video_vae(vae) -> bool:
    return isinstance(vae, VideoAutoencoderKL)


def receptive_frames(vae: VideoAutoencoderKL) -> int:
    """How many past frames (itself excluded) can influence a decoded frame: layers * (window - 1)."""
    return len(vae.temporal_attentions) * (vae.config.temporal_window - 1)
