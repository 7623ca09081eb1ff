"""How much of the VideoVAE's round-trip flicker measure is the real clips' own H.264 noise.

The round-trip flicker of scripts/measure_video_vae.py is mean |(D[f+1] - D[f]) - (X[f+1] - X[f])|
(8-bit levels) with X the real clip as stored (H.264, crf 12, like `magicvideo digits data`) and D
its decoded round trip. Part of it no decoder can remove: the codec's own frame-to-frame noise. This
renders held-out clips exactly (test-split MNIST digits, `digit_clips`), writes and reads them back
through H.264 as the dataset writer does, and prints, on the same clips:

- the codec floor: the measure for a decoder that returned the clean rendering exactly;
- the image decoder's round trip against the stored clips (the issue's measure) and against the
  clean renderings.

    python scripts/video_vae_codec_floor.py --clips 64 [--stride 1] [--vae src/magicvideo/weights/digits/vae]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from diffusers import AutoencoderKL  # noqa: E402
from measure_video_vae import difference_flicker, psnr, to_unit  # noqa: E402

from magicvideo.digits.data import digit_clips  # noqa: E402
from magicvideo.models.video_vae import decode_latents_video  # noqa: E402
from magicvideo.vae import encode_video  # noqa: E402
from magicvideo.video_io import read_video, write_video  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stride", type=int, default=1,
                        help="temporal stride of the 24 fps videos (1: the first 16 frames, as measure_video_vae.py takes)")
    parser.add_argument("--crf", type=int, default=12, help="the dataset writer's H.264 quality")
    parser.add_argument("--vae", default=str(REPO / "src/magicvideo/weights/digits/vae"))
    args = parser.parse_args()

    data = digit_clips(args.clips, split="test", stride=args.stride, seed=args.seed)
    clean = torch.from_numpy(data["frames"]).float() / 255  # (N, F, H, W) in [0, 1]
    stored = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (frames, fps) in enumerate(zip(data["frames"], data["fps"])):
            path = Path(tmp) / f"{i}.mp4"
            write_video(path, np.repeat(frames[..., None], 3, axis=-1), fps=float(fps), crf=args.crf)
            stored.append(torch.from_numpy(read_video(path)[0]).float() / 127.5 - 1)
    real = rearrange(torch.stack(stored), "b f h w c -> b c f h w")

    vae = AutoencoderKL.from_pretrained(args.vae).eval()
    with torch.no_grad():
        latents = torch.cat([encode_video(vae, clip) for clip in real.split(8)])
        decoded = torch.cat([decode_latents_video(vae, z, chunk_size=16, decoder="image") for z in latents.split(8)])

    def mean(x: torch.Tensor) -> float:
        return round(float(x.mean()), 4)

    real_g, decoded_g = to_unit(real), to_unit(decoded)
    out = {
        "clips": args.clips,
        "stride": args.stride,
        "codec_floor": mean(difference_flicker(clean, real_g)),
        "image_decoder": mean(difference_flicker(decoded_g, real_g)),
        "image_decoder_against_clean": mean(difference_flicker(decoded_g, clean)),
        "stored_psnr_db": mean(10 * torch.log10(1 / (real_g - clean).pow(2).flatten(1).mean(1))),
        "image_decoder_psnr_db": mean(psnr(decoded, real)),
    }
    out["codec_floor_fraction"] = round(out["codec_floor"] / out["image_decoder"], 3)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
