"""One SD 1.5-width step of MagicVideoUNet3D, eager vs `torch.compile` (inductor, CPU, weights frozen).

    PYTHONPATH=src python benchmarks/compile_step.py [--widths sd15|small|tiny] [--threads 2] [--no-freezing]

Prints the eager warm-up and steps, the compile time (the compiled model's first call), the largest
difference of the compiled output from the eager one, then eager and compiled steps interleaved.
"""

import argparse
import time

import torch
import torch._inductor.config as inductor_config

from gpu import build  # noqa: E402  (benchmarks/gpu.py: the same models at the same widths)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", choices=("sd15", "small", "tiny"), default="sd15")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-freezing", action="store_true", help="compile without inductor's weight freezing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inductor_config.freezing = not args.no_freezing
    inductor_config.cpp.threads = args.threads
    model = build(args.widths, 16, ["MagicVideoUNet3D"])["MagicVideoUNet3D"].eval()
    torch.manual_seed(1)
    x, t, c = torch.randn(1, 4, 16, 32, 32), torch.tensor([500]), torch.randn(1, 77, model.config.cross_attention_dim)
    with torch.no_grad():
        warm, reference = timed(lambda: model(x, t, c, fps=8.0).sample)
        print("eager warm-up", round(warm, 3), "steps", [round(timed(lambda: model(x, t, c, fps=8.0))[0], 3)
                                                         for _ in range(2)], flush=True)
        compiled = torch.compile(model)
        first, out = timed(lambda: compiled(x, t, c, fps=8.0).sample)
        print("compile + first call", round(first, 1), "s; max |compiled - eager|", (out - reference).abs().max().item(),
              "of values up to", reference.abs().max().item(), flush=True)
        for _ in range(args.repeats):
            eager = timed(lambda: model(x, t, c, fps=8.0))[0]
            fast = timed(lambda: compiled(x, t, c, fps=8.0))[0]
            print("eager", round(eager, 3), "compiled", round(fast, 3), flush=True)


if __name__ == "__main__":
    main()
