"""`magicvideo demo`: the web demo (Gradio), an optional extra: pip install 'magicvideo[demo]'."""

from __future__ import annotations

from . import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="serve the web demo (Gradio) of the whole cascade",
        description="Serve a page (and its HTTP API, usable with gradio_client) that generates videos with "
        "the cascade in --model (default: the bundled digits cascade). Needs the demo extra: "
        "pip install 'magicvideo[demo]'.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--model", help="a cascade or keyframe pipeline folder (default: the bundled cascade)")
    p.add_argument("--concurrency", type=int, default=2, help="requests generated at the same time (default: 2)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available, else cpu)")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="a LoRA of the keyframe U-Net at SCALE (default 1), listed on the page; repeatable (docs/lora.md)")
    p.set_defaults(func=run)


def run(args) -> int:
    if not 0 < args.port < 65536:
        raise UserError(f"--port: must be between 1 and 65535, got {args.port}")
    if args.concurrency < 1:
        raise UserError(f"--concurrency: must be >= 1, got {args.concurrency}")
    from ..devices import resolve_device

    device = resolve_device(args.device)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the demo needs Gradio: pip install 'magicvideo[demo]'") from None
    from ..demo import main

    main(args.model, args.host, args.port, args.concurrency, device, args.lora)
    return 0
