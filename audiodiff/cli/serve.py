"""``audiodiff serve``: vocode over HTTP on localhost (see :mod:`audiodiff.serve`; the README's "Server")."""

from __future__ import annotations

import argparse

from audiodiff.cli.common import (EXIT_OK, EXIT_USAGE, CommandError, _add_engine_args, _load_model, _precision,
                                  _resolve_device, _set_up_engine, log)


def add_parser(subparsers, parents: list) -> None:
    p = subparsers.add_parser("serve", parents=parents, help="vocode over HTTP: POST /vocode, POST /stream")
    p.add_argument("--model", "-m", default="speech-22k",
                   help="a .safetensors model, a .ckpt checkpoint, or a shipped model's name (default: speech-22k)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; the server has no "
                        "authentication, so think twice before 0.0.0.0)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0: any free port)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--max-batch", type=int, default=None,
                   help="requests and stream windows vocoded together at most (default: 8 on a GPU; 1 on a CPU, "
                        "where batching adds latency and no throughput)")
    p.add_argument("--batch-window-ms", type=float, default=10.0,
                   help="how long the first request or stream window of a batch waits for others (default 10)")
    p.add_argument("--batch-seconds", type=float, default=120.0,
                   help="padded audio one batch may hold, rows x longest (default 120); a longer request goes alone")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="longest mel (as seconds of audio) a request may hold; longer ones are refused (default 60)")
    p.add_argument("--max-streams", type=int, default=8, help="streams open at once (default 8)")
    p.add_argument("--stream-idle-seconds", type=float, default=30.0,
                   help="close a stream whose client sends nothing for this long, freeing its slot (default 30)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    _add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from audiodiff.serve import Limits, make_app, serve_forever
        from audiodiff.serve.inputs import default_max_batch
    except ImportError as error:
        raise CommandError(f"audiodiff serve needs aiohttp ({error}); install it with: pip install 'audiodiff[serve]'",
                           EXIT_USAGE) from None
    import torch

    device = _resolve_device(args.device)
    max_batch = default_max_batch(device) if args.max_batch is None else args.max_batch
    try:
        limits = Limits(max_seconds=args.max_seconds, max_batch=max_batch, batch_window_ms=args.batch_window_ms,
                        batch_seconds=args.batch_seconds, max_streams=args.max_streams,
                        stream_idle_seconds=args.stream_idle_seconds)
    except ValueError as error:
        raise CommandError(f"--{str(error).replace('_', '-')}", EXIT_USAGE) from None
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be in 0..65535, got {args.port}", EXIT_USAGE)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = _load_model(args.model, device)
    _set_up_engine(model, args)
    if not model.network.conditional:
        raise CommandError(f"{args.model}: a model without mel conditioning cannot vocode", EXIT_USAGE)
    app = make_app(model, limits, precision=_precision(args.precision, device), name=args.model)

    def bound(port: int) -> None:
        # flushed at once: a parent process (a TTS service, the tests) reads the port from this line
        print(f"serving {args.model} on http://{args.host}:{port} (Ctrl-C to stop)", flush=True)
        log.debug("limits: %s", limits.to_dict())

    serve_forever(app, args.host, args.port, on_bound=bound)
    return EXIT_OK
