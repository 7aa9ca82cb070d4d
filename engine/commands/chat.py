"""`bitsmith chat MODEL`: talk to a model, interactively with streaming, or one-shot with --prompt.

One-shot prints the answer alone on stdout (everything else goes to stderr), so it can be piped.
Interactive: type a message; Ctrl-C stops an answer, Ctrl-D (or /exit) leaves; /reset forgets the turns,
/system TEXT sets the system prompt. The session code is the one the app's chat worker runs
(engine/runtime/session.py), in this process.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

_HELP = "commands: /reset (forget the conversation), /system TEXT, /history, /exit (or Ctrl-D); Ctrl-C stops an answer"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bitsmith chat`."""
    p = subparsers.add_parser(
        "chat",
        help="chat with a model (native runtime or llama.cpp)",
        description="Chat with a Bitsmith folder, an HF folder or Hub id, or a .gguf file. Without --prompt: an "
        "interactive session with streaming; with --prompt: one answer, alone on stdout.",
    )
    p.add_argument("model", help="Bitsmith folder, HF folder, Hub id, .gguf file, or 'bundled' (SmolLM2-135M)")
    p.add_argument("--backend", choices=("auto", "native", "llama.cpp"), default="auto",
                   help="auto: llama.cpp for .gguf files (when installed), native otherwise")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--prompt", help="ask this once and print the answer (no interactive session)")
    p.add_argument("--max-tokens", type=int, default=512, help="longest answer in tokens (default 512)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.1, help="1 = off (default 1.1)")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible answers")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--ctx", type=int, default=None, help="context length in tokens (default: min(model, 4096))")
    p.add_argument("--device", default="auto", help="native backend: auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--stats", action="store_true", help="print tokens/s and time to first token to stderr")
    p.set_defaults(func=_run)


def _params(args: argparse.Namespace) -> Any:
    from bitsmith.engine.runtime.params import SamplingParams

    return SamplingParams(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        repetition_penalty=args.repeat_penalty, seed=args.seed, max_tokens=args.max_tokens, stop=tuple(args.stop),
    )


def _quiet_libraries() -> None:
    import logging
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _stats(session: Any) -> None:
    r = session.last
    if r is not None:
        speed = f"{r.decode_tok_s:.1f} tok/s" if r.decode_tok_s else "-"
        ttft = f"{r.ttft_s:.2f} s" if r.ttft_s is not None else "-"
        print(f"[{r.completion_tokens} tokens, {speed}, first token after {ttft}, ended by {r.reason}"
              + (f", {r.dropped_messages} old messages left out of the prompt" if r.dropped_messages else "") + "]",
              file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from bitsmith.engine.runtime.backends import open_backend
    from bitsmith.engine.runtime.session import ChatSession

    _quiet_libraries()
    params = _params(args)
    backend = open_backend(args.model, args.backend, n_ctx=args.ctx, device=args.device)
    try:
        session = ChatSession(backend, system=args.system, params=params)
        if not backend.has_chat_template:
            print("note: the model has no chat template; using a plain 'User:/Assistant:' transcript", file=sys.stderr)
        if args.prompt is not None:
            return _one_shot(session, args)
        return _interactive(session, args)
    finally:
        backend.close()


def _one_shot(session: Any, args: argparse.Namespace) -> int:
    for piece in session.send(args.prompt):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if args.stats:
        _stats(session)
    return 0


def _interactive(session: Any, args: argparse.Namespace) -> int:
    from bitsmith.engine.errors import BitsmithError

    info = session.backend.describe()
    print(f"chatting with {info.get('model')} ({info.get('backend')}, context {info.get('n_ctx')} tokens). {_HELP}",
          file=sys.stderr)
    previous = signal.getsignal(signal.SIGINT)
    try:
        while True:
            try:
                text = input(">>> ")
            except (EOFError, KeyboardInterrupt):
                print(file=sys.stderr)
                return 0
            if not text.strip():
                continue
            if text.strip() in ("/exit", "/quit"):
                return 0
            if text.strip() == "/reset":
                session.reset()
                print("(conversation forgotten)", file=sys.stderr)
                continue
            if text.startswith("/system"):
                session.system = text[len("/system"):].strip() or None
                print(f"(system prompt {'set' if session.system else 'cleared'})", file=sys.stderr)
                continue
            if text.strip() == "/history":
                for m in session.history():
                    print(f"[{m['role']}] {m['content']}", file=sys.stderr)
                continue
            signal.signal(signal.SIGINT, lambda signum, frame: session.stop())
            try:
                for piece in session.send(text):
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            except BitsmithError as exc:  # the session survives a failed turn
                print(f"\nerror: {exc}" + (f"\n  what to do: {exc.hint}" if exc.hint else ""), file=sys.stderr)
            finally:
                signal.signal(signal.SIGINT, previous)
            sys.stdout.write("\n")
            sys.stdout.flush()
            if session.last is not None and session.last.reason == "stopped":
                print("(stopped)", file=sys.stderr)
            if args.stats:
                _stats(session)
    finally:
        signal.signal(signal.SIGINT, previous)
