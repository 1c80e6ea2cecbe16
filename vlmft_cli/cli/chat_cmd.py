"""`vlmft chat`: ask a checkpoint (or the base model, or a merged model) about a video.

Thin over `vlmft_cli.chat`: options → `ChatRequest` → `open_chat`, then one answer (`--question`) or a
multi-turn loop on a terminal. The frame and model settings (`--max-frames`, `--system-prompt`, …) are
generated from the settings model; a checkpoint's run supplies the rest, as for `vlmft eval`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import JsonOption
from vlmft_cli.cli.settings_options import with_setting_options
from vlmft_cli.errors import ConfigError

#: The settings that mean something to a chat; the others are training's.
CHAT_SETTINGS = {"home", "model", "backend", "profile", "precision", "attention", "quantization", "fps", "max_frames", "frame_sampling", "system_prompt"}
GEN = "Generation"
EXIT_WORDS = ("/exit", "/quit")
RESET_WORDS = ("/reset", "/new")


def _not_chat_settings() -> set[str]:
    from vlmft_cli.settings import Settings

    return set(Settings.model_fields) - CHAT_SETTINGS


@with_setting_options(
    exclude=_not_chat_settings(),
    help={"model": "Base model for --checkpoint none (default tiny-internvl3); a checkpoint's run names its own."},
)
def chat(
    video: Annotated[list[Path], typer.Option("--video", "-v", help="A folder of frames, a video file (mp4, webm, mkv, mov, avi), or image files: repeat --video for each, in frame order.", show_default=False)],
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", "-k", help="'latest', a checkpoint folder, a run folder or name (its newest complete checkpoint), a merged model folder (`vlmft ckpt merge`), or 'none' for the base model.", show_default=False)] = None,
    question: Annotated[str | None, typer.Option("--question", "-q", help="Ask this and print the answer; without it, a conversation on the terminal (/reset starts over, /exit or Ctrl-D ends).", show_default=False)] = None,
    size: Annotated[int | None, typer.Option("--size", min=0, help="Resize frames to SIZE×SIZE before the processor, as `data extract --size` did (default: the size of the data the run trained on, else 288; 0: as they are).", show_default=False)] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Longest answer in tokens.", rich_help_panel=GEN)] = 128,
    temperature: Annotated[float | None, typer.Option("--temperature", min=0.0, help="Sample with this temperature (default: greedy, the decoding `eval --generate` scores).", rich_help_panel=GEN, show_default=False)] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling: keep the smallest set of tokens whose probability reaches P (with --temperature).", rich_help_panel=GEN, show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampling (with --temperature).", rich_help_panel=GEN)] = 0,
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="Experiments folder to find `latest` and run names in (default: the `out` setting, `experiments`; env VLMFT_OUT).", show_default=False)] = None,
    json: JsonOption = False,
    *,
    settings_flags: dict[str, Any],
) -> None:
    """Ask a trained model about a video: one answer with --question, else a conversation (frames in the first turn, as stage 2 trains).

    Example: vlmft chat --checkpoint latest --video demo-run/data/images/val-00000/<video> --question "what is the robot doing?"

    Example: vlmft chat --checkpoint none --model tiny-internvl3 --video clip.mp4 --question "what is the robot doing?" --json

    Example: vlmft chat --checkpoint merged/demo --video frame_0.jpg --video frame_1.jpg   (a conversation)
    """
    from vlmft_cli.chat import ChatRequest, GenerationOptions, open_chat
    from vlmft_cli.settings import resolve_settings

    if question is None and json:
        raise ConfigError("--json prints one answer: pass --question")
    if question is None and not stdin_is_terminal():
        raise ConfigError("no --question and stdin is not a terminal, so there is no one to chat with", hint='pass --question "…" for one answer')
    if question is not None and not question.strip():
        raise ConfigError("--question is empty")
    flags = dict(settings_flags)
    given = {key: flags.pop(key) for key in ("model", "backend", "profile", "home") if key in flags}
    defaults = resolve_settings()
    home = given.get("home") or (defaults.settings.home if "home" in defaults.sources else None)
    request = ChatRequest(
        video=[str(path) for path in video] if len(video) > 1 else str(video[0]),
        checkpoint=checkpoint, model=given.get("model"), backend=given.get("backend"), profile=given.get("profile"),
        runs_dir=runs_dir or defaults.settings.out, home=home, settings=flags, size=size,
        generation=GenerationOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed),
    )  # fmt: skip
    session = open_chat(request, output.make_reporter(quiet=json))
    if question is not None:
        answer = session.ask(question)
        if json:
            timings = {"video_s": session.video_s, "load_s": session.load_s, "encode_s": answer.encode_s, "generate_s": answer.generate_s}
            tokens = {"prompt": answer.prompt_tokens, "generated": answer.new_tokens}
            output.print_json({"question": answer.question, "answer": answer.answer, **session.describe(), "tokens": tokens, "timings": timings})
        else:
            output.console.print(answer.answer, markup=False, soft_wrap=True)
        return
    _conversation(session)


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _conversation(session: Any) -> None:
    output.err_console.print(f"{session.label}: ask about the video; /reset starts over, /exit or Ctrl-D ends.", markup=False)
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            output.err_console.print()
            return
        text = line.strip()
        if not text:
            continue
        if text.lower() in EXIT_WORDS:
            return
        if text.lower() in RESET_WORDS:
            session.reset()
            output.err_console.print("(a new conversation about the same video)", markup=False)
            continue
        answer = session.ask(text)
        output.console.print(f"model> {answer.answer}", markup=False, soft_wrap=True)
