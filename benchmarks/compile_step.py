"""One SD 1.5-width step of MagicVideoUNet3D, eager vs `torch.compile` (inductor, CPU, weights frozen).

    PYTHONPATH=src python benchmarks/compile_step.py [--widths sd15|small|tiny] [--frames 16] [--size 32]
        [--threads 2] [--repeats 3] [--no-freezing]

Prints two eager steps after a warm-up, the compile time (the compiled model's first call), the largest
difference of the compiled output from the eager one, then eager and compiled steps interleaved.
"""

import argparse

import torch
import torch._inductor.config as inductor_config

from gpu import build  # noqa: E402  (benchmarks/gpu.py: the same models at the same widths)
from unet_step import EXTRA, _timed, inputs  # noqa: E402  (the same input and timing as unet_step.py)

NAME = "MagicVideoUNet3D"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", choices=("sd15", "small", "tiny"), default="sd15")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default: 16)")
    parser.add_argument("--size", type=int, default=32, help="latent height and width (default: 32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-freezing", action="store_true", help="compile without inductor's weight freezing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inductor_config.freezing = not args.no_freezing
    inductor_config.cpp.threads = args.threads
    model = build(args.widths, args.frames, [NAME])[NAME]
    sample, timestep, context = inputs(args, model.config.cross_attention_dim)
    with torch.no_grad():
        compiled = torch.compile(model)
        step = lambda unet: unet(sample, timestep, context, **EXTRA[NAME]).sample  # noqa: E731
        reference = step(model)  # the eager warm-up
        print("eager steps", [round(_timed(lambda: step(model)), 3) for _ in range(2)], flush=True)
        first = _timed(lambda: step(compiled))
        difference = (step(compiled) - reference).abs().max().item()
        print("compile + first call", round(first, 1), "s; max |compiled - eager|", difference,
              "of values up to", reference.abs().max().item(), flush=True)
        for _ in range(args.repeats):
            eager, fast = _timed(lambda: step(model)), _timed(lambda: step(compiled))
            print("eager", round(eager, 3), "compiled", round(fast, 3), flush=True)


if __name__ == "__main__":
    main()
