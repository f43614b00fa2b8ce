"""The web demo (`make demo`): serve a page on localhost that generates digits, turns a digit into
another, completes half a digit and morphs between samples, from the checkpoints `make all`
writes (ldm/demo.py). Needs the demo extra: pip install -e '.[demo]'. Without checkpoints the page
says what to run.

With --screenshot PATH it serves the page, opens it in headless Chromium (Playwright, with the
browser at --chromium), clicks Generate, saves a screenshot to PATH and stops.

    python -m scripts.demo --data-dir ../shared/data/mnist                 # http://127.0.0.1:7860
    python -m scripts.demo --data-dir ../shared/data/mnist --port 8000
    python -m scripts.demo --data-dir ../shared/data/mnist --screenshot docs/demo.png
"""

from __future__ import annotations

import importlib.util

from ldm.cli import StageParser, add_data_arg, add_runtime_args, positive_int
from ldm.demo import CHROMIUM, Demo, build_app, drive
from ldm.errors import LdmError
from ldm.launch import run
from ldm.runtime import resolve_device


def parser() -> StageParser:
    parser = StageParser(__doc__)
    parser.add_argument("--checkpoints", default="checkpoints",
                        help="the folder `make all` wrote (unet.safetensors, vae.safetensors, guide.safetensors)")
    add_data_arg(parser)
    parser.add_argument("--host", default="127.0.0.1", help="the address to serve on (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=positive_int, default=7860, help="the port to serve on")
    parser.add_argument("--screenshot", help="serve, click Generate in headless Chromium, save a screenshot here, stop")
    parser.add_argument("--chromium", default=CHROMIUM, help="the Chromium that --screenshot drives")
    add_runtime_args(parser)
    return parser


def main(args) -> None:
    if importlib.util.find_spec("gradio") is None:
        raise LdmError("the demo needs Gradio: pip install -e '.[demo]'")
    demo = Demo.load(args.checkpoints, args.data_dir, resolve_device(args.device))
    if demo.problem:
        print(f"no model: {demo.problem}")
    app = build_app(demo)
    if args.screenshot is None:
        app.launch(server_name=args.host, server_port=args.port, show_error=True)
        return
    app.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, quiet=True)
    try:
        shown = drive(f"http://{args.host}:{args.port}/", args.screenshot, args.chromium)
    finally:
        app.close()
    print(f"{shown['status']}; wrote {args.screenshot}")


if __name__ == "__main__":
    run(parser(), main, multiprocess=False)
